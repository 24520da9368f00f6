// Success-probability predictor: a Gaussian process over prompt embeddings.
//
// Latent logit f ~ GP(mu0, signal_var * exp(-|x - x'|^2 / (2 lengthscale^2))) over L2-normalised
// embeddings. k successes in n trials of a key become a Gaussian pseudo-observation of f at the
// key's embedding; evidence of age a steps is tempered by forgetting^a. Two inference engines
// share that model: `exact` (dense float64 GP on the stored keys, the reference) and `fast`
// (FITC inducing points in information form, per-step cost independent of history).
// docs/success_gp.md has the derivations and the measurements behind every default.
//
// The objects behind the facade: a key store (gp/key_store.hpp) holds the evidence; the exact and
// the fast engine (gp/exact_engine.hpp, gp/fast_engine.hpp) read it; gp/state_io.hpp converts
// them to and from a GPState. No Python in here: invalid input throws std::invalid_argument,
// internal numerical failures NumericalFailure (vipfast/fail.hpp).
#pragma once

#include "vipfast/calibration.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace vipfast {

enum class GPMode { exact, fast, automatic };
// binomial: y = logit((k+1/2)/(n+1)), s^2 = 1/((n+1) p(1-p)) + jitter.
// fixed:    y = logit(clip(k/n, clip, 1-clip)), s^2 = jitter (the published VIP code's predictor).
// laplace:  the binomial likelihood's Laplace (Newton) site at f*, the model's mean at the key just
//           before the observation kept within 2 s of the binomial target: W = n p*(1-p*),
//           y = f* + (k - n p*)/W, s^2 = 1/W + jitter. Pools counts across neighbours.
enum class NoiseModel { binomial, fixed, laplace };
// moderated: sigmoid(mu / sqrt(1 + pi v / 8)) ~ E[sigmoid(f)] (MacKay 1992); plugin: sigmoid(mu).
enum class ProbaMethod { moderated, plugin };

const char* gp_mode_name(GPMode mode);

struct SuccessGPConfig {
  int64_t dim = 0;
  std::optional<double> lengthscale;  // fixed; none = median heuristic over the stored keys
  double signal_var = 1.0;            // sigma_f^2
  std::optional<double> prior_mean;   // fixed; none = forgetting-weighted mean of the stored targets
  double forgetting = 0.95;           // gamma in (0, 1]: per-step weight on old evidence
  int64_t capacity = 4096;            // stored keys; least recently observed evicted
  GPMode mode = GPMode::automatic;
  NoiseModel noise = NoiseModel::binomial;
  double jitter = 0.0;                // binomial, laplace: added to s^2 (>= 0); fixed: s^2 itself (> 0)
  double clip = 0.01;                 // fixed: rate clipped to [clip, 1 - clip], 0 < clip < 1/2
  ProbaMethod proba = ProbaMethod::moderated;
  int64_t num_inducing = 384;         // fast: at most this many inducing points
  int64_t auto_exact_max = 1024;      // automatic: exact while at most this many keys are stored
  int64_t calibration_window = 0;     // > 0: predictions recalibrated on the last this many steps' outcomes
};

// Every value check of a configuration, each in one place.
void validate_config(const SuccessGPConfig& config);

// The options of SuccessGPConfig, one row each: the Python keyword, the `config` entry and the
// state entry share the row's name. Values: integer -> int64_t, real -> double, optional_real ->
// double or monostate (None), choice -> std::string (one of `choices`).
enum class OptionKind { integer, real, optional_real, choice };
using OptionValue = std::variant<std::monostate, int64_t, double, std::string>;
struct ConfigOption {
  const char* name;
  OptionKind kind;
  std::vector<std::string> choices;
  OptionValue (*get)(const SuccessGPConfig&);
  void (*set)(SuccessGPConfig&, const OptionValue&);  // the value holds the kind's alternative
};
const std::vector<ConfigOption>& config_options();
// option.set after checking the value's alternative against the kind (fails naming the option).
void set_option(SuccessGPConfig& config, const ConfigOption& option, const OptionValue& value);

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

// Version 2 added the calibration entries; version 3 names the configuration entries after the
// options and drops the prediction cache. Versions 1 and 2 still load.
constexpr int64_t kSuccessGPStateVersion = 3;

// What observe can take back from a prediction of the same rows, instead of computing it again.
struct PredictionBasis {
  std::vector<uint64_t> keys;                   // (Q)
  std::vector<double> latent_mean, latent_var;  // (Q): the GP's posterior of f, before recalibration
  // Fast engine: the whitened features it computed, for the rows whose key was not stored with
  // that embedding; valid while the inducing set `inducing_id` is in use (0 = none).
  uint64_t inducing_id = 0;
  int64_t feature_width = 0;                 // m
  std::vector<int64_t> feature_rows;         // (U) ascending row indices
  std::vector<double> features;              // (U, m)
  std::vector<double> feature_embeddings;    // (U, dim): the normalised rows they belong to
};

// With calibration_window > 0, mean and var are those of the recalibrated logit a + b f.
struct Prediction {
  std::vector<double> mean;    // (Q) posterior mean of the logit f
  std::vector<double> var;     // (Q) posterior variance of f
  std::vector<double> proba;   // (Q) p-hat (moderated or plugin)
  std::vector<double> weight;  // (Q) E[p(1 - p)]
  PredictionBasis basis;
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

// The stages of an observe after which a test can make it fail (inject_failure_after).
enum class ObserveStage { none, relinearised, stored, engine_updated };

namespace gp {
class KeyStore;
class ExactEngine;
class FastEngine;
struct ObservedBatch;
struct StoreChange;
struct RelinearisedSite;
}  // namespace gp

class SuccessGP {
 public:
  explicit SuccessGP(const SuccessGPConfig& config);
  ~SuccessGP();
  SuccessGP(const SuccessGP&) = delete;
  SuccessGP& operator=(const SuccessGP&) = delete;

  // keys (Q), embeddings (Q, dim) row-major. Changes nothing: the prediction is a value.
  Prediction predict(int64_t count, const uint64_t* keys, const double* embeddings);
  // keys (Q), embeddings (Q, dim) row-major, successes (Q), trials (Q). Successes may be fractional
  // (rewards in [0, 1] summed per group). Duplicate keys are merged (counts summed, the last
  // embedding kept); rows with trials == 0 carry no evidence. `prediction`: the basis of a
  // prediction of the same keys in the same order; it is the prediction the calibration scores,
  // and its feature rows are reused while valid. Without it the rows are predicted first (with
  // calibration on). Transactional: if it throws, the model is exactly as before.
  void observe(int64_t count, const uint64_t* keys, const double* embeddings, const double* successes,
               const int64_t* trials, const PredictionBasis* prediction = nullptr);
  // `steps` training steps have passed: all evidence ages by that much.
  void advance(int64_t steps);

  const SuccessGPConfig& config() const { return config_; }
  int64_t num_stored() const;
  int64_t step() const;
  double lengthscale() const;     // NaN until one is known
  double prior_mean() const;      // mu0 used by the next prediction
  GPMode active_mode() const;     // exact or fast: what the next prediction uses
  int64_t num_inducing_used() const;
  PseudoObservations pseudo_observations() const;
  // The current site of each key the store holds: precision (forgetting applied) and target of its
  // pseudo-observation; precision 0 (and target 0) for keys it does not hold. All (count).
  void stored_sites(int64_t count, const uint64_t* keys, double* precision, double* target) const;
  // The recalibration map f -> offset + scale f in use (0 and 1 while calibration is off).
  std::pair<double, double> calibration() const;

  GPState state() const;
  static std::unique_ptr<SuccessGP> from_state(const GPState& state);

  // For tests: the next observe throws a NumericalFailure once it has completed `stage`.
  void inject_failure_after(ObserveStage stage);

 private:
  bool fast_in_use() const;
  void predict_latent(int64_t count, const uint64_t* keys, const double* rows, const double* squared_norms,
                      double* mean, double* var, PredictionBasis* basis);
  // Applies the merged batch to the store and the engines, or, if anything throws, to nothing.
  void commit_observe(bool relinearise, const PredictionBasis* basis, std::optional<LogitCalibration>& next_calibration);
  void stage_completed(ObserveStage stage);

  SuccessGPConfig config_;
  std::unique_ptr<gp::KeyStore> store_;
  std::unique_ptr<gp::ExactEngine> exact_;
  std::unique_ptr<gp::FastEngine> fast_;  // null until built (fast mode, or auto beyond auto_exact_max)
  LogitCalibration calibration_;
  ObserveStage injected_failure_ = ObserveStage::none;
  // Scratch of predict and observe: normalised rows, the merged batch, the Laplace step's means and
  // what the store reports back.
  std::vector<double> rows_, squared_norms_, stored_means_;
  std::unique_ptr<gp::ObservedBatch> batch_;
  std::vector<gp::StoreChange> changes_;
  std::vector<gp::RelinearisedSite> moved_;
  mutable std::mutex mutex_;  // the bindings release the GIL: calls from several threads serialise here
};

}  // namespace vipfast
