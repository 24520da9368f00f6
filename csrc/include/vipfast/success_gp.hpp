// Success-probability predictor: a Gaussian process over prompt embeddings (DESIGN.md section 3).
//
// Latent logit f ~ GP(mu0, signal_var * exp(-|x - x'|^2 / (2 lengthscale^2))) over L2-normalised
// embeddings. k successes in n trials of a key become a Gaussian pseudo-observation of f at the
// key's embedding; evidence of age a steps is tempered by forgetting^a. Two inference engines
// share that model: `exact` (dense float64 GP on the stored keys, the reference) and `fast`
// (FITC inducing points in information form, per-step cost independent of history).
// docs/success_gp.md has the derivations and the measurements behind every default.
// No Python in here: errors are std::invalid_argument.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace vipfast {

enum class GPMode { exact, fast, automatic };
// binomial: y = logit((k+1/2)/(n+1)), s^2 = 1/((n+1) p(1-p)) + jitter (DESIGN.md section 3).
// fixed:    y = logit(clip(k/n, clip, 1-clip)), s^2 = jitter (the published VIP code's predictor).
// laplace:  the binomial likelihood's Laplace (Newton) site at f*, the model's mean at the key just
//           before the observation kept within 2 s of the binomial target: W = n p*(1-p*),
//           y = f* + (k - n p*)/W, s^2 = 1/W + jitter. Pools counts across neighbours.
enum class NoiseModel { binomial, fixed, laplace };
// moderated: sigmoid(mu / sqrt(1 + pi v / 8)) ~ E[sigmoid(f)] (MacKay 1992); plugin: sigmoid(mu).
enum class ProbaMethod { moderated, plugin };

GPMode parse_gp_mode(const std::string& name);
NoiseModel parse_noise_model(const std::string& name);
ProbaMethod parse_proba_method(const std::string& name);
const char* gp_mode_name(GPMode mode);
const char* noise_model_name(NoiseModel noise);
const char* proba_method_name(ProbaMethod proba);

struct SuccessGPConfig {
  int64_t dim = 0;
  double lengthscale = 0.0;        // > 0 fixed; 0 = median heuristic over the stored keys
  double signal_var = 1.0;         // sigma_f^2
  bool fixed_prior_mean = false;   // false: mu0 = forgetting-weighted mean of the stored targets
  double prior_mean = 0.0;
  double forgetting = 0.95;        // gamma in (0, 1]: per-step weight on old evidence
  int64_t capacity = 4096;         // stored keys; least recently observed evicted
  GPMode mode = GPMode::automatic;
  NoiseModel noise = NoiseModel::binomial;
  double jitter = 0.0;             // binomial, laplace: added to s^2 (>= 0); fixed: s^2 itself (> 0)
  double clip = 0.01;              // fixed: rate clipped to [clip, 1 - clip], 0 < clip < 1/2
  ProbaMethod proba = ProbaMethod::moderated;
  int64_t num_inducing = 384;      // fast: at most this many inducing points
  int64_t auto_exact_max = 1024;   // automatic: exact while at most this many keys are stored
  int64_t calibration_window = 0;  // > 0: predictions recalibrated on the last this many steps' outcomes
};

void validate_config(const SuccessGPConfig& config);

// E[sigmoid(f)(1 - sigmoid(f))] for f ~ N(mean, var): 32-node Gauss-Hermite for var <= 6, else
// 64-node Gauss-Legendre over u = sigmoid(f) (Gauss-Hermite under-resolves the bump there).
double expected_bernoulli_variance(double mean, double var);
// Nodes and weights of the 32-node physicists' Gauss-Hermite rule (Golub-Welsch), for tests.
void gauss_hermite_rule(double* nodes, double* weights);

// One named entry of a saved state: a number, a string or a row-major array.
struct StateValue {
  enum class Kind { real, integer, text, reals, integers, unsigneds };
  Kind kind = Kind::real;
  double real = 0.0;
  int64_t integer = 0;
  std::string text;
  std::vector<int64_t> shape;
  std::vector<double> reals;
  std::vector<int64_t> integers;
  std::vector<uint64_t> unsigneds;
};
using GPState = std::map<std::string, StateValue>;

// Version 2 added the calibration entries; version 1 states load with calibration off.
constexpr int64_t kSuccessGPStateVersion = 2;

// Output pointers of predict; any may be null. All (count).
// With calibration_window > 0, mean and var are those of the recalibrated logit a + b f.
struct PredictOutputs {
  double* mean = nullptr;    // posterior mean of the logit f
  double* var = nullptr;     // posterior variance of f
  double* proba = nullptr;   // p-hat (moderated or plugin)
  double* weight = nullptr;  // E[p(1 - p)]
};

// The stored pseudo-observations at the current step (for tests and baselines).
struct PseudoObservations {
  std::vector<uint64_t> keys;        // (N)
  std::vector<double> embeddings;    // (N, dim), normalised
  std::vector<double> targets;       // (N) y
  std::vector<double> noise_var;     // (N) s^2 / forgetting^age; inf once the weight underflows
  std::vector<double> successes;     // (N) forgotten sums
  std::vector<double> trials;        // (N)
  std::vector<double> linearisation; // (N) laplace: f* of each site; empty for the other models
};

class SuccessGP {
 public:
  explicit SuccessGP(const SuccessGPConfig& config);
  ~SuccessGP();
  SuccessGP(const SuccessGP&) = delete;
  SuccessGP& operator=(const SuccessGP&) = delete;

  // keys (Q), embeddings (Q, dim) row-major, successes (Q), trials (Q). Successes may be fractional
  // (rewards in [0, 1] summed per group). Duplicate keys are merged (counts summed, the last
  // embedding kept); rows with trials == 0 carry no evidence.
  void observe(int64_t count, const uint64_t* keys, const double* embeddings, const double* successes,
               const int64_t* trials);
  // `steps` training steps have passed: all evidence ages by that much.
  void advance(int64_t steps);
  // keys (Q), embeddings (Q, dim) row-major.
  void predict(int64_t count, const uint64_t* keys, const double* embeddings, const PredictOutputs& out);

  const SuccessGPConfig& config() const;
  int64_t num_stored() const;
  int64_t step() const;
  double lengthscale() const;     // NaN until one is known
  double prior_mean() const;      // mu0 used by the next prediction
  GPMode active_mode() const;     // exact or fast: what the next prediction uses
  int64_t num_inducing_used() const;
  PseudoObservations pseudo_observations() const;
  // The recalibration map f -> offset + scale f in use (0 and 1 while calibration is off).
  std::pair<double, double> calibration() const;

  GPState state() const;
  static std::unique_ptr<SuccessGP> from_state(const GPState& state);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  mutable std::mutex mutex_;  // the bindings release the GIL: calls from several threads serialise here
};

}  // namespace vipfast
