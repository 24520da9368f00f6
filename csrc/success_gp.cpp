#include "vipfast/success_gp.hpp"
#include "vipfast/calibration.hpp"
#include "vipfast/fail.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>

#ifndef VIPFAST_VERSION
#define VIPFAST_VERSION "unknown"
#endif

namespace vipfast {
namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMap = Eigen::Map<RowMatrix>;
using ConstRowMap = Eigen::Map<const RowMatrix>;
using ColMap = Eigen::Map<Eigen::MatrixXd>;
using VecMap = Eigen::Map<Eigen::VectorXd>;
using ConstVecMap = Eigen::Map<const Eigen::VectorXd>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kPi = 3.141592653589793238462643383279502884;
constexpr int kHermiteNodes = 32;
constexpr int kLegendreNodes = 64;
// Above this latent variance 32-node Gauss-Hermite under-resolves sigma(1 - sigma) (error 1e-4 at
// v = 10, 2e-2 at v = 100); E[p(1-p)] is then integrated in u = sigma(f) by Gauss-Legendre.
constexpr double kHermiteMaxVar = 6.0;

// Lengthscale heuristic: points in the median subsample, refresh trigger, adoption tolerance.
constexpr int64_t kMedianSample = 256;
constexpr double kRefreshFraction = 0.25;
constexpr double kLengthscaleTolerance = 0.05;
// Fast mode: inducing-point candidates, pivot tolerance, K_mm jitter, coverage trigger.
constexpr int64_t kPoolFactor = 8;       // k-means on at most 8 M stored keys
constexpr int kLloydIterations = 10;
constexpr double kPivotTolerance = 1e-6;
constexpr double kInducingJitter = 1e-8;
constexpr double kCoverageEma = 0.3;
constexpr double kCoverageFactor = 2.0;
constexpr double kCoverageMargin = 0.05;
// Pseudo-observation noise is floored at this fraction of signal_var, so that absurd trial counts
// (n ~ 2^62) cannot make I + T^1/2 K T^1/2 too ill-conditioned to factor.
constexpr double kMinNoiseRatio = 1e-10;
// Laplace sites: the linearisation point stays within this many standard errors of the key's own
// binomial target, because one Newton step taken far out in the logistic's flat tail (the model
// says p ~ 0.001, the key now succeeds half the time) would overshoot by tens of logits.
constexpr double kLaplaceTrustRegion = 2.0;
// Sites whose linearisation point is within this many logits of the posterior mean are kept: 0.5
// re-linearises a third as many sites per step as 0.25 at no loss in the simulator (docs/success_gp.md).
constexpr double kRelinearisationTolerance = 0.5;
// Below this the kernel's -1/(2 l^2) overflows to -inf and 0 * inf turns K(x, x) into NaN; on unit
// vectors (distances <= 2) no useful lengthscale is anywhere near it.
constexpr double kMinLengthscale = 1e-100;
// Recalibration keeps every outcome of its window, W x rows per observe: the bound caps the W factor.
constexpr int64_t kMaxCalibrationWindow = 1000;
constexpr int64_t kChunk = 1024;  // rows per block when (re)computing features of the stored set
constexpr int64_t kMinSplitRows = 64;  // below 2x this, row blocks are not split across threads

// Grow-only scratch: buffers never shrink, so steady-state steps allocate nothing (fresh
// multi-megabyte allocations page-fault on every call on this class of VM).
template <class T>
T* grow(std::vector<T>& buffer, int64_t size) {
  const auto wanted = static_cast<size_t>(std::max<int64_t>(size, 1));
  if (buffer.size() < wanted) buffer.resize(std::max(wanted, buffer.size() + buffer.size() / 2));
  return buffer.data();
}

double sigmoid(double f) {
  if (f >= 0) return 1.0 / (1.0 + std::exp(-f));
  const double e = std::exp(f);
  return e / (1.0 + e);
}

// sigma(f)(1 - sigma(f)) without overflow.
double bernoulli_variance(double f) {
  const double e = std::exp(-std::abs(f));
  const double d = 1.0 + e;
  return e / (d * d);
}

// Plain left-to-right sum of squares: the same bits wherever the row lives, unlike a vectorised
// reduction whose order depends on alignment. State round trips rely on this.
double sum_squares(const double* x, int64_t n) {
  double s = 0.0;
  for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}

struct QuadratureRule {
  std::vector<double> x, w;
};

// Physicists' Gauss-Hermite rule for weight exp(-x^2): Golub-Welsch nodes polished by Newton on
// the orthonormal Hermite recurrence; weights 2 / p_n'(x)^2 (as numpy.polynomial.hermite.hermgauss).
QuadratureRule make_hermite_rule(int n) {
  Eigen::MatrixXd jacobi = Eigen::MatrixXd::Zero(n, n);
  for (int k = 1; k < n; ++k) jacobi(k, k - 1) = jacobi(k - 1, k) = std::sqrt(k / 2.0);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(jacobi, Eigen::EigenvaluesOnly);
  QuadratureRule rule{std::vector<double>(n), std::vector<double>(n)};
  for (int i = 0; i < n; ++i) {
    double x = solver.eigenvalues()(i);
    double derivative = 1.0;
    for (int iteration = 0; iteration < 3; ++iteration) {
      double p_prev = 0.0, p = std::pow(kPi, -0.25);
      for (int j = 0; j < n; ++j) {  // p_{j+1} = x sqrt(2/(j+1)) p_j - sqrt(j/(j+1)) p_{j-1}
        const double p_next = x * std::sqrt(2.0 / (j + 1)) * p - std::sqrt(static_cast<double>(j) / (j + 1)) * p_prev;
        p_prev = p;
        p = p_next;
      }
      derivative = std::sqrt(2.0 * n) * p_prev;
      x -= p / derivative;
    }
    rule.x[i] = x;
    rule.w[i] = 2.0 / (derivative * derivative);
  }
  for (int i = 0; i < n / 2; ++i) {  // exact symmetry
    const double x = 0.5 * (rule.x[n - 1 - i] - rule.x[i]);
    const double w = 0.5 * (rule.w[n - 1 - i] + rule.w[i]);
    rule.x[i] = -x;
    rule.x[n - 1 - i] = x;
    rule.w[i] = rule.w[n - 1 - i] = w;
  }
  return rule;
}

// Gauss-Legendre on (0, 1): Newton on the Legendre recurrence from Tricomi's initial guesses.
QuadratureRule make_legendre_rule(int n) {
  QuadratureRule rule{std::vector<double>(n), std::vector<double>(n)};
  for (int i = 0; i < n; ++i) {
    double x = std::cos(kPi * (i + 0.75) / (n + 0.5));
    double derivative = 1.0;
    for (int iteration = 0; iteration < 100; ++iteration) {
      double p_prev = 1.0, p = x;
      for (int j = 2; j <= n; ++j) {
        const double p_next = ((2.0 * j - 1.0) * x * p - (j - 1.0) * p_prev) / j;
        p_prev = p;
        p = p_next;
      }
      derivative = n * (x * p - p_prev) / (x * x - 1.0);
      const double step = p / derivative;
      x -= step;
      if (std::abs(step) < 1e-16) break;
    }
    rule.x[i] = 0.5 * (1.0 - x);  // ascending in (0, 1)
    rule.w[i] = 1.0 / ((1.0 - x * x) * derivative * derivative);
  }
  return rule;
}

const QuadratureRule& hermite_rule() {
  static const QuadratureRule rule = make_hermite_rule(kHermiteNodes);
  return rule;
}

const QuadratureRule& legendre_rule() {
  static const QuadratureRule rule = make_legendre_rule(kLegendreNodes);
  return rule;
}

// In place on a (rows, cols) row-major Gram block G = A B^T of unit-ish rows:
// K = signal_var * exp(-max(0, |a|^2 + |b|^2 - 2 G) / (2 l^2)).
void gram_to_kernel(double* gram, int64_t rows, int64_t cols, const double* a_sq, const double* b_sq,
                    double signal_var, double lengthscale) {
  const double scale = -0.5 / (lengthscale * lengthscale);
  const ConstVecMap b(b_sq, cols);
  for (int64_t i = 0; i < rows; ++i) {
    VecMap row(gram + i * cols, cols);
    row = ((b.array() + a_sq[i] - 2.0 * row.array()).max(0.0) * scale).exp() * signal_var;
  }
}

// Writes unit rows of `in` (rows, d) to `out` and their squared norms; rejects NaN, inf, zero rows.
void normalise_rows(const double* in, int64_t rows, int64_t d, double* out, double* sq) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* x = in + r * d;
    double scale = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      if (!std::isfinite(x[j])) fail("embeddings[", r, ", ", j, "] is ", x[j], "; embeddings must be finite");
      scale = std::max(scale, std::abs(x[j]));
    }
    if (scale == 0.0) fail("embeddings[", r, "] is all zeros and cannot be L2-normalised");
    double* y = out + r * d;
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      y[j] = x[j] / scale;
      ss += y[j] * y[j];
    }
    const double norm = std::sqrt(ss);
    for (int64_t j = 0; j < d; ++j) y[j] /= norm;
    sq[r] = sum_squares(y, d);
  }
}

// Runs fn(begin, end) on two halves of [0, rows), the second half on another thread. The split
// depends on `rows` only, so results are the same bits on every machine and every run.
template <class Fn>
void split_rows(int64_t rows, const Fn& fn) {
  if (rows < 2 * kMinSplitRows) {
    fn(int64_t{0}, rows);
    return;
  }
  const int64_t half = rows / 2;
  std::exception_ptr error;
  std::thread worker;
  try {
    worker = std::thread([&] {
      try {
        fn(half, rows);
      } catch (...) {
        error = std::current_exception();
      }
    });
  } catch (const std::system_error&) {  // no thread available: same work, one after the other
    fn(half, rows);
  }
  try {
    fn(int64_t{0}, half);
  } catch (...) {
    if (worker.joinable()) worker.join();
    throw;
  }
  if (worker.joinable()) worker.join();
  if (error) std::rethrow_exception(error);
}

bool same_row(const double* a, const double* b, int64_t d) { return std::memcmp(a, b, sizeof(double) * d) == 0; }

}  // namespace

// ---------------------------------------------------------------------------------------
// Names, configuration, quadrature
// ---------------------------------------------------------------------------------------

GPMode parse_gp_mode(const std::string& name) {
  if (name == "exact") return GPMode::exact;
  if (name == "fast") return GPMode::fast;
  if (name == "auto") return GPMode::automatic;
  fail("mode must be 'exact', 'fast' or 'auto', got '", name, "'");
}

NoiseModel parse_noise_model(const std::string& name) {
  if (name == "binomial") return NoiseModel::binomial;
  if (name == "fixed") return NoiseModel::fixed;
  if (name == "laplace") return NoiseModel::laplace;
  fail("noise must be 'binomial', 'fixed' or 'laplace', got '", name, "'");
}

ProbaMethod parse_proba_method(const std::string& name) {
  if (name == "moderated") return ProbaMethod::moderated;
  if (name == "plugin") return ProbaMethod::plugin;
  fail("proba must be 'moderated' or 'plugin', got '", name, "'");
}

const char* gp_mode_name(GPMode mode) {
  switch (mode) {
    case GPMode::exact: return "exact";
    case GPMode::fast: return "fast";
    case GPMode::automatic: return "auto";
  }
  return "?";
}

const char* noise_model_name(NoiseModel noise) {
  switch (noise) {
    case NoiseModel::binomial: return "binomial";
    case NoiseModel::fixed: return "fixed";
    case NoiseModel::laplace: return "laplace";
  }
  return "?";
}
const char* proba_method_name(ProbaMethod proba) { return proba == ProbaMethod::moderated ? "moderated" : "plugin"; }

void validate_config(const SuccessGPConfig& c) {
  if (c.dim < 1) fail("dim must be >= 1, got ", c.dim);
  if (!(std::isfinite(c.lengthscale) && c.lengthscale >= 0))
    fail("lengthscale must be a positive number (or None for the median heuristic), got ", c.lengthscale);
  if (c.lengthscale > 0 && c.lengthscale < kMinLengthscale)
    fail("lengthscale must be >= ", kMinLengthscale, ", got ", c.lengthscale);
  if (!(std::isfinite(c.signal_var) && c.signal_var > 0)) fail("signal_var must be positive and finite, got ", c.signal_var);
  if (c.fixed_prior_mean && !std::isfinite(c.prior_mean)) fail("prior_mean must be finite, got ", c.prior_mean);
  if (!(c.forgetting > 0 && c.forgetting <= 1)) fail("forgetting must lie in (0, 1], got ", c.forgetting);
  if (c.capacity < 1) fail("capacity must be >= 1, got ", c.capacity);
  if (c.capacity > (int64_t{1} << 40) / c.dim) fail("capacity * dim = ", c.capacity, " * ", c.dim, " is too large");
  if (!(std::isfinite(c.jitter) && c.jitter >= 0)) fail("jitter must be finite and >= 0, got ", c.jitter);
  if (c.noise == NoiseModel::fixed && !(c.jitter > 0))
    fail("noise='fixed' needs jitter > 0 (it is the observation noise variance), got ", c.jitter);
  if (!(c.clip > 0 && c.clip < 0.5)) fail("clip must lie in (0, 0.5), got ", c.clip);
  if (c.num_inducing < 1 || c.num_inducing > 65536) fail("num_inducing must lie in [1, 65536], got ", c.num_inducing);
  if (c.auto_exact_max < 0) fail("auto_exact_max must be >= 0, got ", c.auto_exact_max);
  if (c.calibration_window < 0 || c.calibration_window > kMaxCalibrationWindow)
    fail("calibration_window must lie in [0, ", kMaxCalibrationWindow, "], got ", c.calibration_window);
}

void gauss_hermite_rule(double* nodes, double* weights) {
  const QuadratureRule& rule = hermite_rule();
  std::copy(rule.x.begin(), rule.x.end(), nodes);
  std::copy(rule.w.begin(), rule.w.end(), weights);
}

double expected_bernoulli_variance(double mean, double var) {
  var = std::max(var, 0.0);
  double total = 0.0;
  if (var <= kHermiteMaxVar) {
    const QuadratureRule& rule = hermite_rule();
    const double spread = std::sqrt(2.0 * var);
    for (int i = 0; i < kHermiteNodes; ++i) total += rule.w[i] * bernoulli_variance(mean + spread * rule.x[i]);
    return std::min(total / std::sqrt(kPi), 0.25);  // the weights sum to sqrt(pi) only up to rounding
  }
  // sigma(1 - sigma) is the logistic density: E = integral over u in (0, 1) of N(mean - logit(u); 0, var).
  const QuadratureRule& rule = legendre_rule();
  for (int i = 0; i < kLegendreNodes; ++i) {
    const double u = rule.x[i];
    const double t = mean - (std::log(u) - std::log1p(-u));
    total += rule.w[i] * std::exp(-0.5 * t * t / var);
  }
  return std::min(total / std::sqrt(2.0 * kPi * var), 0.25);
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

struct SuccessGP::Impl {
  SuccessGPConfig cfg;
  int64_t d;
  int64_t step = 0;
  uint64_t seq_counter = 0;

  // Stored keys: slots [0, size), a key -> slot index and an LRU list (head = most recent).
  int64_t size = 0;
  int64_t slots = 0;  // allocated
  std::vector<uint64_t> keys;
  std::vector<double> emb, sqn;            // (slots, d), (slots): normalised embeddings
  std::vector<double> k_eff, n_eff;        // forgotten sums as of t_obs
  std::vector<int64_t> t_obs;              // step of the last observation
  std::vector<uint64_t> seq;               // recency stamp
  std::vector<double> y, tau;              // pseudo-observation and its precision 1/s^2 at t_obs
  std::vector<double> f_lin;               // laplace: the model's mean at the key before t_obs's data
  std::vector<int64_t> prev, next;
  int64_t head = -1, tail = -1;
  std::unordered_map<uint64_t, int64_t> index;

  // Median-heuristic lengthscale and its refresh bookkeeping.
  double ell = kNaN;
  bool ell_provisional = false;
  int64_t ell_count = 0;    // stored keys when last estimated
  int64_t ell_inserts = 0;  // keys inserted since

  // Exact engine: chol(I + T^1/2 K T^1/2) (col-major), T^1/2 and the weights alpha.
  std::vector<double> ex_chol, ex_sqrt_tau, ex_alpha;
  double ex_mu0 = 0.0;
  bool ex_valid = false;

  // Fast engine (FITC in information form over whitened features phi = L_mm^-1 k_m(x)).
  int64_t m = 0;                          // inducing points in use; 0 = not built
  std::vector<double> z, z_sq;            // (m, d), (m)
  Eigen::MatrixXd l_mm;                   // (m, m) chol(K_mm), lower
  std::vector<double> phi;                // (slots, m)
  std::vector<double> delta, site;        // per slot: residual variance, FITC site precision at t_obs
  Eigen::MatrixXd s_info;                 // (m, m) lower: sum of decayed site * phi phi^T
  Eigen::VectorXd c_info, e_info;         // sum decayed site * y * phi, sum decayed site * phi
  double delta_ref = 0.0, delta_ema = 0.0;
  int64_t size_at_selection = 0;          // stored keys when the inducing points were chosen
  // Features of the last prediction's unknown keys, reused when the same keys are observed.
  std::vector<uint64_t> cache_keys;
  std::vector<double> cache_emb, cache_phi;
  std::unordered_map<uint64_t, int64_t> cache_index;
  int64_t cache_rows = 0;
  // Factorisation of P = I + S for the next prediction.
  Eigen::MatrixXd p_chol;
  Eigen::VectorXd p_mean;
  double fa_mu0 = 0.0;
  bool fa_valid = false;

  LogitCalibration calibration;
  // The last prediction's rows and its posterior before the map: every caller plans, then
  // observes the same rows, so the calibration record reuses it instead of predicting again.
  std::vector<uint64_t> scored_keys;
  std::vector<double> scored_emb, scored_mean, scored_var;
  bool scored_valid = false;

  // Scratch (grow-only).
  std::vector<double> xq, xq_sq, gram, rows_a, rows_b, rows_c, rows_d, vec_a, vec_b, vec_c, lin_mean, cal_mean, cal_var;
  Eigen::MatrixXd s_half;  // second thread's share of a rank update
  std::vector<int64_t> ivec_a, ivec_b;
  std::unordered_map<uint64_t, int64_t> merge_index;

  explicit Impl(const SuccessGPConfig& config) : cfg(config), d(config.dim), calibration(config.calibration_window) {
    if (cfg.lengthscale > 0) ell = cfg.lengthscale;
  }

  // ---- small helpers ------------------------------------------------------------------

  double decay(int64_t age) const {
    return cfg.forgetting == 1.0 ? 1.0 : std::pow(cfg.forgetting, static_cast<double>(age));
  }

  bool fast_active() const {
    return cfg.mode == GPMode::fast || (cfg.mode == GPMode::automatic && size > cfg.auto_exact_max);
  }

  void set_pseudo_observation(int64_t slot) {
    const double k = k_eff[slot], n = n_eff[slot];
    double target, noise;
    if (cfg.noise != NoiseModel::fixed) {
      // p~ = (k + 1/2)/(n + 1): logit = log(k + 1/2) - log(n - k + 1/2), s^2 = (n+1)/((k+1/2)(n-k+1/2)).
      const double a = k + 0.5, b = std::max(n - k, 0.0) + 0.5;
      target = std::log(a) - std::log(b);
      noise = (n + 1.0) / (a * b);
      if (cfg.noise == NoiseModel::laplace) {
        // A key that never succeeded is consistent with every lower logit (and one that always
        // succeeded with every higher one): no bound on that side.
        const double reach = kLaplaceTrustRegion * std::sqrt(noise);
        const double low = k > 0 ? target - reach : -kInf, high = k < n ? target + reach : kInf;
        const double f = std::clamp(f_lin[slot], low, high);
        const double p = sigmoid(f);
        // n >= 1 and f within reach of the target keep W away from 0 (W > 0.008 for every n).
        const double w = std::max(n * p * (1.0 - p), std::numeric_limits<double>::min());  // a loaded state's n
        target = f + (k - n * p) / w;
        noise = 1.0 / w;
      }
      noise += cfg.jitter;
    } else {
      const double p = std::clamp(k / n, cfg.clip, 1.0 - cfg.clip);
      target = std::log(p) - std::log1p(-p);
      noise = cfg.jitter;
    }
    y[slot] = target;
    tau[slot] = 1.0 / std::max(noise, kMinNoiseRatio * cfg.signal_var);
  }

  void ensure_slots(int64_t needed) {
    if (needed <= slots) return;
    const int64_t grown = std::min(cfg.capacity, std::max(needed, slots + slots / 2 + 16));
    const auto n = static_cast<size_t>(grown);
    keys.resize(n);
    emb.resize(n * d);
    sqn.resize(n);
    k_eff.resize(n);
    n_eff.resize(n);
    t_obs.resize(n);
    seq.resize(n);
    y.resize(n);
    tau.resize(n);
    if (cfg.noise == NoiseModel::laplace) f_lin.resize(n);
    prev.resize(n);
    next.resize(n);
    delta.resize(n);
    site.resize(n);
    update_of_slot.resize(n, -1);
    if (m > 0) phi.resize(n * m);
    slots = grown;
  }

  void unlink(int64_t s) {
    if (prev[s] >= 0) next[prev[s]] = next[s]; else head = next[s];
    if (next[s] >= 0) prev[next[s]] = prev[s]; else tail = prev[s];
  }

  void push_front(int64_t s) {
    prev[s] = -1;
    next[s] = head;
    if (head >= 0) prev[head] = s;
    head = s;
    if (tail < 0) tail = s;
  }

  double running_prior_mean() const {
    if (cfg.fixed_prior_mean) return cfg.prior_mean;
    if (size == 0) return 0.0;
    double weighted = 0.0, weight = 0.0, plain = 0.0;
    for (int64_t i = 0; i < size; ++i) {
      const double g = decay(step - t_obs[i]);
      weighted += g * y[i];
      weight += g;
      plain += y[i];
    }
    return weight > 1e-250 ? weighted / weight : plain / static_cast<double>(size);
  }

  // ---- lengthscale --------------------------------------------------------------------

  // An evenly strided subsample of `count` stored rows and their squared norms, copied into the
  // rows_a / vec_a scratch buffers.
  std::pair<double*, double*> gather_strided(int64_t count) {
    double* pts = grow(rows_a, count * d);
    double* sq = grow(vec_a, count);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t slot = j * size / count;
      std::copy_n(&emb[slot * d], d, pts + j * d);
      sq[j] = sqn[slot];
    }
    return {pts, sq};
  }

  // Median pairwise distance over an evenly strided subsample of the stored keys (all of them
  // when at most kMedianSample); NaN when no two distinct points exist.
  double median_distance() {
    const int64_t sample = std::min(size, kMedianSample);
    if (sample < 2) return kNaN;
    const auto [pts, sq] = gather_strided(sample);
    double* g = grow(gram, sample * sample);
    const ConstRowMap x(pts, sample, d);
    RowMap(g, sample, sample).noalias() = x * x.transpose();
    const int64_t pairs = sample * (sample - 1) / 2;
    double* dist = grow(vec_b, pairs);
    int64_t p = 0;
    for (int64_t i = 0; i < sample; ++i)
      for (int64_t j = i + 1; j < sample; ++j)
        dist[p++] = std::sqrt(std::max(0.0, sq[i] + sq[j] - 2.0 * g[i * sample + j]));
    auto median_of = [](double* first, int64_t n) {
      double* mid = first + n / 2;
      std::nth_element(first, mid, first + n);
      if (n % 2 == 1) return *mid;
      return 0.5 * (*mid + *std::max_element(first, mid));
    };
    double median = median_of(dist, pairs);
    if (median > 0) return median;
    int64_t positive = 0;
    for (int64_t q = 0; q < pairs; ++q)
      if (dist[q] > 0) dist[positive++] = dist[q];
    return positive > 0 ? median_of(dist, positive) : kNaN;
  }

  // Re-estimates once the stored set grew or turned over by a quarter since the last estimate;
  // adopts the new value if it moved by more than kLengthscaleTolerance. Returns true on change.
  bool refresh_lengthscale() {
    if (cfg.lengthscale > 0 || size == 0) return false;
    const bool due = std::isnan(ell) || ell_provisional ||
                     static_cast<double>(size) >= (1.0 + kRefreshFraction) * static_cast<double>(ell_count) ||
                     static_cast<double>(ell_inserts) >= kRefreshFraction * static_cast<double>(ell_count);
    if (!due) return false;
    const double estimate = median_distance();
    ell_count = size;
    ell_inserts = 0;
    if (std::isnan(estimate)) {
      if (!std::isnan(ell)) return false;
      ell = 1.0;  // until two distinct points exist; unit vectors lie within distance 2
      ell_provisional = true;
      return true;
    }
    if (std::isnan(ell) || ell_provisional || std::abs(estimate / ell - 1.0) > kLengthscaleTolerance) {
      ell = estimate;
      ell_provisional = false;
      return true;
    }
    return false;
  }

  // ---- observe ------------------------------------------------------------------------

  // One term of the fast engine's update: S += w phi phi^T, c += cy phi, e += ce phi.
  struct Term {
    double w, cy, ce;
  };
  struct Update {
    int64_t slot;
    bool needs_phi;  // new key or new embedding
    bool live;       // false once evicted again within the same observe
    bool merge;      // re-observed with the same embedding: net change on the same phi
    double old_weight, old_target;
  };
  std::vector<Term> terms;         // removals whose phi rows sit in rows_b
  std::vector<Update> updates;
  std::vector<int64_t> update_of_slot;  // slot -> index in `updates` during one observe, else -1

  double current_site(int64_t slot) const { return site[slot] * decay(step - t_obs[slot]); }

  void record_removal(int64_t slot) {
    const double w = current_site(slot);
    const auto row = static_cast<int64_t>(terms.size());
    double* buffer = grow(rows_b, (row + 1) * m);
    std::copy_n(&phi[slot * m], m, buffer + row * m);
    terms.push_back({-w, -w * y[slot], -w});
  }

  void observe(int64_t count, const uint64_t* in_keys, const double* embeddings, const double* successes,
               const int64_t* trials) {
    if (count < 0) fail("count must be >= 0, got ", count);
    for (int64_t i = 0; i < count; ++i) {
      if (trials[i] < 0) fail("trials[", i, "] = ", trials[i], " is negative");
      if (!std::isfinite(successes[i])) fail("successes[", i, "] = ", successes[i], " is not finite");
      if (successes[i] < 0) fail("successes[", i, "] = ", successes[i], " is negative");
      if (successes[i] > static_cast<double>(trials[i]))
        fail("successes[", i, "] = ", successes[i], " exceeds trials[", i, "] = ", trials[i]);
    }
    if (count == 0) return;
    double* x = grow(xq, count * d);
    double* xs = grow(xq_sq, count);
    normalise_rows(embeddings, count, d, x, xs);  // validates them too: a rejected observe changes nothing
    record_calibration(count, in_keys, embeddings, x, xs, successes, trials);
    scored_valid = false;
    if (cfg.noise == NoiseModel::laplace) relinearise_stale_sites();

    // Merge duplicates in order of first occurrence: counts summed, last embedding kept.
    merge_index.clear();
    std::vector<int64_t>& first_row = ivec_a;
    std::vector<int64_t>& last_row = ivec_b;
    first_row.clear();
    last_row.clear();
    double* mk = grow(vec_a, count);
    double* mn = grow(vec_b, count);
    for (int64_t i = 0; i < count; ++i) {
      auto [it, inserted] = merge_index.try_emplace(in_keys[i], static_cast<int64_t>(first_row.size()));
      if (inserted) {
        mk[it->second] = 0.0;
        mn[it->second] = 0.0;
        first_row.push_back(i);
        last_row.push_back(i);
      }
      mk[it->second] += successes[i];
      mn[it->second] += static_cast<double>(trials[i]);
      last_row[it->second] = i;
    }

    const bool fast_live = m > 0;
    // Laplace: a new key's first site is linearised at the prior mean, a known key's at its point
    // just refreshed; the next observe's Newton step moves both to the posterior mean.
    const double new_key_linearisation = cfg.noise == NoiseModel::laplace ? running_prior_mean() : 0.0;
    terms.clear();
    updates.clear();
    for (size_t u = 0; u < first_row.size(); ++u) {
      if (mn[u] == 0.0) continue;  // trials == 0: no evidence
      const uint64_t key = in_keys[first_row[u]];
      const double* row = x + last_row[u] * d;
      int64_t slot;
      Update up{0, true, true, false, 0.0, 0.0};
      if (auto it = index.find(key); it != index.end()) {
        slot = it->second;
        const bool same = same_row(&emb[slot * d], row, d);
        if (fast_live) {
          if (same) {
            up.merge = true;
            up.old_weight = current_site(slot);
            up.old_target = y[slot];
          } else {
            record_removal(slot);
          }
        }
        const double g = decay(step - t_obs[slot]);
        k_eff[slot] = g * k_eff[slot] + mk[u];
        n_eff[slot] = g * n_eff[slot] + mn[u];
        if (same) {
          up.needs_phi = false;
        } else {
          std::copy_n(row, d, &emb[slot * d]);
          sqn[slot] = xs[last_row[u]];
        }
        unlink(slot);
      } else {
        if (size == cfg.capacity) {
          slot = tail;
          if (fast_live) {
            const int64_t earlier = update_of_slot[slot];
            if (earlier < 0) {
              record_removal(slot);
            } else {  // inserted or updated earlier in this batch: undo that instead
              updates[earlier].live = false;
              if (updates[earlier].merge) {
                const double* f = &phi[slot * m];
                const auto r = static_cast<int64_t>(terms.size());
                std::copy_n(f, m, grow(rows_b, (r + 1) * m) + r * m);
                const double w = updates[earlier].old_weight;
                terms.push_back({-w, -w * updates[earlier].old_target, -w});
              }
            }
          }
          index.erase(keys[slot]);
          unlink(slot);
        } else {
          ensure_slots(size + 1);
          slot = size++;
        }
        keys[slot] = key;
        std::copy_n(row, d, &emb[slot * d]);
        sqn[slot] = xs[last_row[u]];
        k_eff[slot] = mk[u];
        n_eff[slot] = mn[u];
        if (cfg.noise == NoiseModel::laplace) f_lin[slot] = new_key_linearisation;
        index.emplace(key, slot);
        ++ell_inserts;
      }
      t_obs[slot] = step;
      seq[slot] = ++seq_counter;
      push_front(slot);
      set_pseudo_observation(slot);
      if (fast_live) {
        up.slot = slot;
        update_of_slot[slot] = static_cast<int64_t>(updates.size());
        updates.push_back(up);
      }
    }
    for (const Update& up : updates) update_of_slot[up.slot] = -1;

    const bool ell_changed = refresh_lengthscale();
    if (fast_active()) {
      if (m == 0 || ell_changed) {
        rebuild_fast();
      } else {
        apply_updates();
        if (size >= 2 * size_at_selection || (size_at_selection < cfg.num_inducing && size > size_at_selection) ||
            delta_ema > kCoverageFactor * delta_ref + kCoverageMargin * cfg.signal_var)
          rebuild_fast();
      }
    }
    ex_valid = false;
    fa_valid = false;
    scored_valid = false;
  }

  // Scores the prediction the model makes for these rows now, i.e. before their outcomes count:
  // the one the plan that drew them saw, when nothing was observed in between. `embeddings` as
  // given, `x`/`xs` normalised.
  void record_calibration(int64_t count, const uint64_t* in_keys, const double* embeddings, const double* x,
                          const double* xs, const double* successes, const int64_t* trials) {
    if (!calibration.enabled()) return;
    const auto n = static_cast<size_t>(count);
    if (scored_valid && scored_keys.size() == n && std::equal(in_keys, in_keys + count, scored_keys.begin()) &&
        same_row(embeddings, scored_emb.data(), count * d)) {
      calibration.record(step, count, scored_mean.data(), scored_var.data(), successes, trials);
      return;
    }
    double* mean = grow(cal_mean, count);
    double* var = grow(cal_var, count);
    predict_normalised(count, in_keys, x, xs, mean, var);
    calibration.record(step, count, mean, var, successes, trials);
  }

  // One Newton step of the Laplace approximation, taken at the start of each observe with the
  // posterior the preceding prediction already factored: every stored site whose linearisation
  // point is more than kRelinearisationTolerance from the posterior mean is re-linearised there.
  // Re-linearising only the keys being observed would leave the others' sites anchored where
  // their keys were last seen: a cluster that never succeeds would then drift down one logit per
  // revisit instead of per step. Once the means settle few sites change, so the fast engine
  // updates its sums by their net change, and the factor is kept when none did.
  void relinearise_stale_sites() {
    if (size == 0) return;
    const bool fast = fast_active() && m > 0;
    double* mean = grow(lin_mean, size);
    if (fast) {
      // The inducing-point mean, without FITC's own-site correction: a linearisation point only
      // has to be near the mode, and this costs O(m) per key instead of a triangular solve.
      if (!fa_valid) factor_fast();
      VecMap(mean, size).noalias() = ConstRowMap(phi.data(), size, m) * p_mean;
      VecMap(mean, size).array() += fa_mu0;
    } else {
      predict_exact(size, emb.data(), sqn.data(), mean, nullptr);
    }
    terms.clear();
    bool changed = false;
    for (int64_t slot = 0; slot < size; ++slot) {
      if (!(std::abs(mean[slot] - f_lin[slot]) > kRelinearisationTolerance)) continue;
      changed = true;
      const double old_weight = fast ? current_site(slot) : 0.0, old_target = y[slot];
      f_lin[slot] = mean[slot];
      set_pseudo_observation(slot);
      if (!fast) continue;
      site[slot] = tau[slot] / (1.0 + tau[slot] * delta[slot]);
      const double w = current_site(slot);
      const auto row = static_cast<int64_t>(terms.size());
      std::copy_n(&phi[slot * m], m, grow(rows_b, (row + 1) * m) + row * m);
      terms.push_back({w - old_weight, w * y[slot] - old_weight * old_target, w - old_weight});
    }
    if (fast) apply_terms(rows_b.data(), terms.data(), static_cast<int64_t>(terms.size()));
    terms.clear();
    if (changed) {
      ex_valid = false;
      fa_valid = false;
    }
  }

  // ---- fast engine --------------------------------------------------------------------

  // Whitened features of `rows` unit rows: out = (L_mm^-1 K(Z, x))^T, (rows, m) row-major.
  void features(const double* pts, const double* pts_sq, int64_t rows, double* out) const {
    split_rows(rows, [&](int64_t begin, int64_t end) {
      RowMap k(out + begin * m, end - begin, m);
      k.noalias() = ConstRowMap(pts + begin * d, end - begin, d) * ConstRowMap(z.data(), m, d).transpose();
      gram_to_kernel(k.data(), end - begin, m, pts_sq + begin, z_sq.data(), cfg.signal_var, ell);
      l_mm.triangularView<Eigen::Lower>().solveInPlace(k.transpose());
    });
  }

  double residual_variance(const double* f) const { return std::max(0.0, cfg.signal_var - sum_squares(f, m)); }

  // k-means centroids of a strided pool of stored embeddings (Lloyd from strided seeds), then a
  // pivoted Cholesky over the centroids' kernel drops near-duplicates. Centroids summarise a
  // cluster without any one prompt's own direction, so the Nystrom part keeps more of the shared
  // covariance than sampled points do (docs/success_gp.md has the comparison).
  void select_inducing_points() {
    const int64_t pool = std::min(size, kPoolFactor * cfg.num_inducing);
    const int64_t target = std::min(cfg.num_inducing, pool);
    const auto [pts, sq] = gather_strided(pool);
    std::vector<double> centres(static_cast<size_t>(target * d)), centre_sq(static_cast<size_t>(target));
    for (int64_t k = 0; k < target; ++k) {
      const int64_t j = k * pool / target;
      std::copy_n(pts + j * d, d, &centres[k * d]);
      centre_sq[k] = sq[j];
    }
    lloyd(pts, pool, centres, centre_sq, target);

    // Greedy pivoted Cholesky on K(centres, centres): keeps the best-conditioned subset.
    RowMatrix kcc(target, target);
    kcc.noalias() = ConstRowMap(centres.data(), target, d) * ConstRowMap(centres.data(), target, d).transpose();
    gram_to_kernel(kcc.data(), target, target, centre_sq.data(), centre_sq.data(), cfg.signal_var, ell);
    Eigen::MatrixXd factor = Eigen::MatrixXd::Zero(target, target);
    Eigen::VectorXd resid = kcc.diagonal();
    std::vector<int64_t> chosen;
    for (int64_t k = 0; k < target; ++k) {
      Eigen::Index pivot;
      const double best = resid.maxCoeff(&pivot);
      if (!(best > kPivotTolerance * cfg.signal_var)) break;
      Eigen::VectorXd col = kcc.row(pivot).transpose();
      if (k > 0) col.noalias() -= factor.leftCols(k) * factor.row(pivot).leftCols(k).transpose();
      factor.col(k) = col / std::sqrt(best);
      resid.array() -= factor.col(k).array().square();
      resid[pivot] = 0.0;
      chosen.push_back(pivot);
    }
    std::sort(chosen.begin(), chosen.end());
    m = static_cast<int64_t>(chosen.size());
    z.resize(static_cast<size_t>(m * d));
    z_sq.resize(static_cast<size_t>(m));
    for (int64_t k = 0; k < m; ++k) {
      std::copy_n(&centres[chosen[k] * d], d, &z[k * d]);
      z_sq[k] = centre_sq[chosen[k]];
    }
  }

  void lloyd(const double* pts, int64_t pool, std::vector<double>& centres, std::vector<double>& centre_sq,
             int64_t count) {
    double* g = grow(gram, pool * count);
    std::vector<int64_t> assign(static_cast<size_t>(pool), -1), members(static_cast<size_t>(count));
    std::vector<double> sums(static_cast<size_t>(count * d));
    for (int iteration = 0; iteration < kLloydIterations; ++iteration) {
      split_rows(pool, [&](int64_t begin, int64_t end) {
        RowMap(g + begin * count, end - begin, count).noalias() =
            ConstRowMap(pts + begin * d, end - begin, d) * ConstRowMap(centres.data(), count, d).transpose();
      });
      bool changed = false;
      std::fill(sums.begin(), sums.end(), 0.0);
      std::fill(members.begin(), members.end(), 0);
      for (int64_t i = 0; i < pool; ++i) {  // nearest centre: max x.c - |c|^2/2
        int64_t best = 0;
        double best_score = -kInf;
        for (int64_t k = 0; k < count; ++k) {
          const double score = g[i * count + k] - 0.5 * centre_sq[k];
          if (score > best_score) {
            best_score = score;
            best = k;
          }
        }
        changed |= assign[i] != best;
        assign[i] = best;
        ++members[best];
        double* s = &sums[best * d];
        const double* p = pts + i * d;
        for (int64_t j = 0; j < d; ++j) s[j] += p[j];
      }
      if (!changed) break;
      for (int64_t k = 0; k < count; ++k) {
        if (members[k] == 0) continue;  // an empty cluster keeps its centre
        for (int64_t j = 0; j < d; ++j) centres[k * d + j] = sums[k * d + j] / static_cast<double>(members[k]);
        centre_sq[k] = sum_squares(&centres[k * d], d);
      }
    }
  }

  void factor_inducing_kernel() {
    RowMatrix kmm(m, m);
    kmm.noalias() = ConstRowMap(z.data(), m, d) * ConstRowMap(z.data(), m, d).transpose();
    gram_to_kernel(kmm.data(), m, m, z_sq.data(), z_sq.data(), cfg.signal_var, ell);
    for (double jitter = kInducingJitter;; jitter *= 10) {
      Eigen::MatrixXd a = kmm;
      a.diagonal().array() += jitter * cfg.signal_var;
      Eigen::LLT<Eigen::MatrixXd> llt(a);
      if (llt.info() == Eigen::Success) {
        l_mm = llt.matrixL();
        return;
      }
      if (jitter > 1e-2) fail("internal error: the inducing-point kernel matrix is not positive definite");
    }
  }

  // S += sum_r w_r phi_r phi_r^T, c += sum_r cy_r phi_r, e += sum_r ce_r phi_r over `rows` rows
  // of `f` (row-major, stride m). Positive and negative weights go to two symmetric rank updates.
  void apply_terms(const double* f, const Term* t, int64_t rows) {
    if (rows == 0) return;
    double* cy = grow(vec_b, rows);
    double* ce = grow(vec_c, rows);
    int64_t positive = 0, negative = 0;
    for (int64_t r = 0; r < rows; ++r) {
      cy[r] = t[r].cy;
      ce[r] = t[r].ce;
      positive += t[r].w > 0;
      negative += t[r].w < 0;
    }
    double* pos = grow(rows_c, positive * m);
    double* neg = grow(rows_d, negative * m);
    positive = negative = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (t[r].w == 0) continue;
      const double root = std::sqrt(std::abs(t[r].w));
      double* out = t[r].w > 0 ? pos + (positive++) * m : neg + (negative++) * m;
      for (int64_t j = 0; j < m; ++j) out[j] = root * f[r * m + j];
    }
    rank_update(pos, positive, 1.0);
    rank_update(neg, negative, -1.0);
    const ConstRowMap a(f, rows, m);
    c_info.noalias() += a.transpose() * ConstVecMap(cy, rows);
    e_info.noalias() += a.transpose() * ConstVecMap(ce, rows);
  }

  // S += sign * A^T A (lower triangle); two halves of the rows in parallel.
  void rank_update(const double* a, int64_t rows, double sign) {
    if (rows == 0) return;
    if (rows < 2 * kMinSplitRows) {
      s_info.selfadjointView<Eigen::Lower>().rankUpdate(ConstRowMap(a, rows, m).transpose(), sign);
      return;
    }
    s_half.setZero(m, m);
    split_rows(rows, [&](int64_t begin, int64_t end) {
      Eigen::MatrixXd& target = begin == 0 ? s_info : s_half;
      target.selfadjointView<Eigen::Lower>().rankUpdate(ConstRowMap(a + begin * m, end - begin, m).transpose(), sign);
    });
    s_info.triangularView<Eigen::Lower>() += s_half;
  }

  // Information sums from scratch over the stored set.
  void resum_information() {
    s_info.setZero(m, m);
    c_info.setZero(m);
    e_info.setZero(m);
    for (int64_t start = 0; start < size; start += kChunk) {
      const int64_t rows = std::min(kChunk, size - start);
      terms.resize(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        const double w = current_site(start + r);
        terms[r] = {w, w * y[start + r], w};
      }
      apply_terms(&phi[start * m], terms.data(), rows);
    }
    terms.clear();
  }

  void rebuild_fast() {
    try {
      rebuild_fast_unguarded();
    } catch (...) {
      m = 0;  // not built: predictions fall back to the exact engine until a rebuild succeeds
      throw;
    }
  }

  void rebuild_fast_unguarded() {
    cache_rows = 0;
    cache_index.clear();
    if (size == 0) {
      m = 0;
      return;
    }
    select_inducing_points();
    size_at_selection = size;
    factor_inducing_kernel();
    phi.assign(static_cast<size_t>(slots * m), 0.0);
    for (int64_t start = 0; start < size; start += kChunk) {
      const int64_t rows = std::min(kChunk, size - start);
      features(&emb[start * d], &sqn[start], rows, &phi[start * m]);
    }
    double total = 0.0;
    for (int64_t slot = 0; slot < size; ++slot) {
      delta[slot] = residual_variance(&phi[slot * m]);
      site[slot] = tau[slot] / (1.0 + tau[slot] * delta[slot]);
      total += delta[slot];
    }
    delta_ref = delta_ema = total / static_cast<double>(size);
    resum_information();
  }

  // Applies this observe's changes to the information sums: removals (evicted keys, changed
  // embeddings), net changes of re-observed keys and the sites of new keys.
  void apply_updates() {
    // Features: unchanged rows keep theirs; else the prediction cache; else computed in one block.
    std::vector<int64_t>& fresh = ivec_a;
    fresh.clear();
    for (const Update& up : updates) {
      if (!up.live || !up.needs_phi) continue;
      const uint64_t key = keys[up.slot];
      if (auto it = cache_index.find(key);
          it != cache_index.end() && same_row(&cache_emb[it->second * d], &emb[up.slot * d], d)) {
        std::copy_n(&cache_phi[it->second * m], m, &phi[up.slot * m]);
      } else {
        fresh.push_back(up.slot);
      }
    }
    const auto nf = static_cast<int64_t>(fresh.size());
    if (nf > 0) {
      double* pts = grow(rows_a, nf * d);
      double* sq = grow(vec_a, nf);
      for (int64_t r = 0; r < nf; ++r) {
        std::copy_n(&emb[fresh[r] * d], d, pts + r * d);
        sq[r] = sqn[fresh[r]];
      }
      double* out = grow(gram, nf * m);
      features(pts, sq, nf, out);
      for (int64_t r = 0; r < nf; ++r) std::copy_n(out + r * m, m, &phi[fresh[r] * m]);
    }
    // Gather every term's phi row behind the removals already in rows_b.
    const auto removed = static_cast<int64_t>(terms.size());
    int64_t live = 0;
    for (const Update& up : updates) live += up.live;
    double* f = grow(rows_b, (removed + live) * m);
    double batch_delta = 0.0;
    for (const Update& up : updates) {
      if (!up.live) continue;
      const int64_t slot = up.slot;
      delta[slot] = residual_variance(&phi[slot * m]);
      site[slot] = tau[slot] / (1.0 + tau[slot] * delta[slot]);
      batch_delta += delta[slot];
      const double w = site[slot];
      const double old_w = up.merge ? up.old_weight : 0.0;
      std::copy_n(&phi[slot * m], m, f + static_cast<int64_t>(terms.size()) * m);
      terms.push_back({w - old_w, w * y[slot] - old_w * up.old_target, w - old_w});
    }
    apply_terms(f, terms.data(), static_cast<int64_t>(terms.size()));
    if (live > 0)
      delta_ema = (1.0 - kCoverageEma) * delta_ema + kCoverageEma * batch_delta / static_cast<double>(live);
  }

  void factor_fast() {
    fa_mu0 = running_prior_mean();
    p_chol.resize(m, m);
    p_chol.triangularView<Eigen::Lower>() = s_info.triangularView<Eigen::Lower>();
    p_chol.diagonal().array() += 1.0;
    Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(p_chol);
    if (llt.info() != Eigen::Success) fail("internal error: the fast-mode posterior precision is not positive definite");
    p_mean = c_info - fa_mu0 * e_info;
    p_chol.triangularView<Eigen::Lower>().solveInPlace(p_mean);
    p_chol.triangularView<Eigen::Lower>().transpose().solveInPlace(p_mean);
    fa_valid = true;
  }

  void predict_fast(int64_t count, const uint64_t* qkeys, const double* x, const double* xs, double* mean,
                    double* var) {
    if (!fa_valid) factor_fast();
    // Feature rows of the queries: a stored key with the same embedding uses its own (and gets
    // the residual correction below), the cache serves repeats, the rest are computed in one block.
    double* f = grow(rows_a, count * m);
    std::vector<int64_t>& known = ivec_a;
    std::vector<int64_t>& fresh = ivec_b;
    known.assign(static_cast<size_t>(count), -1);
    fresh.clear();
    for (int64_t i = 0; i < count; ++i) {
      if (auto it = index.find(qkeys[i]); it != index.end() && same_row(&emb[it->second * d], x + i * d, d)) {
        known[i] = it->second;
        std::copy_n(&phi[it->second * m], m, f + i * m);
      } else if (auto ct = cache_index.find(qkeys[i]);
                 ct != cache_index.end() && same_row(&cache_emb[ct->second * d], x + i * d, d)) {
        std::copy_n(&cache_phi[ct->second * m], m, f + i * m);
      } else {
        fresh.push_back(i);
      }
    }
    const auto nf = static_cast<int64_t>(fresh.size());
    if (nf > 0) {
      double* pts = grow(rows_b, nf * d);
      double* sq = grow(vec_a, nf);
      for (int64_t r = 0; r < nf; ++r) {
        std::copy_n(x + fresh[r] * d, d, pts + r * d);
        sq[r] = xs[fresh[r]];
      }
      double* out = grow(gram, nf * m);
      features(pts, sq, nf, out);
      for (int64_t r = 0; r < nf; ++r) std::copy_n(out + r * m, m, f + fresh[r] * m);
    }
    // The cache now holds this query's unknown keys.
    cache_index.clear();
    cache_rows = 0;
    grow(cache_keys, count);
    grow(cache_emb, count * d);
    grow(cache_phi, count * m);
    for (int64_t i = 0; i < count; ++i) {
      if (known[i] >= 0) continue;
      cache_keys[cache_rows] = qkeys[i];
      std::copy_n(x + i * d, d, &cache_emb[cache_rows * d]);
      std::copy_n(f + i * m, m, &cache_phi[cache_rows * m]);
      cache_index[qkeys[i]] = cache_rows++;
    }

    const ConstRowMap features_q(f, count, m);
    VecMap(mean, count).noalias() = features_q * p_mean;
    double* v = grow(rows_b, count * m);
    std::copy_n(f, count * m, v);
    split_rows(count, [&](int64_t begin, int64_t end) {
      RowMap whitened(v + begin * m, end - begin, m);
      p_chol.triangularView<Eigen::Lower>().solveInPlace(whitened.transpose());
    });
    for (int64_t i = 0; i < count; ++i) {
      const double vq = sum_squares(v + i * m, m);  // Var[q] of the inducing-point part
      const double mq = fa_mu0 + mean[i];
      const int64_t slot = known[i];
      if (slot < 0) {
        mean[i] = mq;
        var[i] = vq + residual_variance(f + i * m);
        continue;
      }
      // FITC residual correction for a stored key predicted at its own embedding: remove its
      // site from q (cavity), add the residual r ~ N(0, delta), and condition on its observation.
      const double g = decay(step - t_obs[slot]);
      const double site_now = site[slot] * g, tau_now = tau[slot] * g;
      const double vc = vq / std::max(1.0 - site_now * vq, 1e-300);
      const double mc = mq + vc * site_now * (mq - y[slot]);
      const double a = vc + delta[slot];
      const double denom = 1.0 + a * tau_now;
      mean[i] = (mc + a * tau_now * y[slot]) / denom;
      var[i] = a / denom;
    }
  }

  // ---- exact engine -------------------------------------------------------------------

  void factor_exact() {
    const int64_t n = size;
    ex_mu0 = running_prior_mean();
    double* l = grow(ex_chol, n * n);
    double* root = grow(ex_sqrt_tau, n);
    double* alpha = grow(ex_alpha, n);
    for (int64_t i = 0; i < n; ++i) root[i] = std::sqrt(tau[i] * decay(step - t_obs[i]));
    // B = I + T^1/2 K T^1/2 (Rasmussen & Williams Alg. 3.2 form: stable as precisions reach 0).
    ColMap b(l, n, n);
    b.triangularView<Eigen::Lower>().setZero();
    const ConstRowMap xs(emb.data(), n, d);
    b.selfadjointView<Eigen::Lower>().rankUpdate(xs);
    const double scale = -0.5 / (ell * ell);
    const ConstVecMap sq(sqn.data(), n), rt(root, n);
    for (int64_t j = 0; j < n; ++j) {
      auto col = b.col(j).tail(n - j).array();
      col = ((sq.tail(n - j).array() + sq[j] - 2.0 * col).max(0.0) * scale).exp() *
            (cfg.signal_var * root[j]) * rt.tail(n - j).array();
      b(j, j) += 1.0;
    }
    Eigen::Ref<Eigen::MatrixXd> ref(b);
    Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(ref);
    if (llt.info() != Eigen::Success) fail("internal error: the exact-mode matrix I + T^1/2 K T^1/2 is not positive definite");
    VecMap a(alpha, n);
    for (int64_t i = 0; i < n; ++i) a[i] = root[i] * (y[i] - ex_mu0);
    b.triangularView<Eigen::Lower>().solveInPlace(a);
    b.triangularView<Eigen::Lower>().transpose().solveInPlace(a);
    a.array() *= rt.array();
    ex_valid = true;
  }

  // var may be null: the mean alone skips the triangular solve.
  void predict_exact(int64_t count, const double* x, const double* xs, double* mean, double* var) {
    const int64_t n = size;
    if (!ex_valid) factor_exact();
    double* k = grow(gram, count * n);
    split_rows(count, [&](int64_t begin, int64_t end) {
      const int64_t rows = end - begin;
      double* kb = k + begin * n;
      RowMap kq(kb, rows, n);
      kq.noalias() = ConstRowMap(x + begin * d, rows, d) * ConstRowMap(emb.data(), n, d).transpose();
      gram_to_kernel(kb, rows, n, xs + begin, sqn.data(), cfg.signal_var, ell);
      VecMap(mean + begin, rows).noalias() = kq * ConstVecMap(ex_alpha.data(), n);
      if (!var) return;
      ColMap v(kb, n, rows);  // the same buffer read as K_*^T
      v.array().colwise() *= ConstVecMap(ex_sqrt_tau.data(), n).array();
      ColMap(ex_chol.data(), n, n).triangularView<Eigen::Lower>().solveInPlace(v);
    });
    for (int64_t i = 0; i < count; ++i) {
      mean[i] += ex_mu0;
      if (var) var[i] = std::max(0.0, cfg.signal_var - sum_squares(k + i * n, n));
    }
  }

  // The GP's own posterior of the logit at the rows (before recalibration).
  void predict_latent(int64_t count, const uint64_t* qkeys, const double* embeddings, double* mean, double* var) {
    double* x = grow(xq, count * d);
    double* xs = grow(xq_sq, count);
    normalise_rows(embeddings, count, d, x, xs);
    predict_normalised(count, qkeys, x, xs, mean, var);
  }

  void predict_normalised(int64_t count, const uint64_t* qkeys, const double* x, const double* xs, double* mean,
                          double* var) {
    if (count == 0) return;
    if (size == 0) {
      const double mu0 = running_prior_mean();
      std::fill_n(mean, count, mu0);
      std::fill_n(var, count, cfg.signal_var);
    } else if (fast_active() && m > 0) {
      predict_fast(count, qkeys, x, xs, mean, var);
    } else {
      predict_exact(count, x, xs, mean, var);
    }
  }

  void predict(int64_t count, const uint64_t* qkeys, const double* embeddings, const PredictOutputs& out) {
    if (count < 0) fail("count must be >= 0, got ", count);
    double* mean = out.mean ? out.mean : grow(vec_b, count);
    double* var = out.var ? out.var : grow(vec_c, count);
    predict_latent(count, qkeys, embeddings, mean, var);
    if (calibration.enabled()) {
      scored_keys.assign(qkeys, qkeys + count);
      scored_emb.assign(embeddings, embeddings + count * d);
      scored_mean.assign(mean, mean + count);
      scored_var.assign(var, var + count);
      scored_valid = true;
    }
    calibration.apply(count, mean, var);
    for (int64_t i = 0; i < count; ++i) {
      if (out.proba) {
        const double f = cfg.proba == ProbaMethod::moderated ? mean[i] / std::sqrt(1.0 + kPi * var[i] / 8.0) : mean[i];
        out.proba[i] = sigmoid(f);
      }
      if (out.weight) out.weight[i] = expected_bernoulli_variance(mean[i], var[i]);
    }
  }

  void advance(int64_t steps) {
    if (steps < 0) fail("steps must be >= 0, got ", steps);
    if (steps == 0) return;
    if (step > std::numeric_limits<int64_t>::max() - steps) fail("step counter would overflow int64");
    step += steps;
    if (m > 0 && cfg.forgetting != 1.0) {
      const double g = decay(steps);
      if (s_info.diagonal().maxCoeff() * g < 1e-200) {  // everything forgotten: avoid denormals
        s_info.setZero();
        c_info.setZero();
        e_info.setZero();
      } else {
        s_info.triangularView<Eigen::Lower>() *= g;
        c_info *= g;
        e_info *= g;
      }
    }
    ex_valid = false;
    fa_valid = false;
    scored_valid = false;
  }

  // ---- state --------------------------------------------------------------------------

  GPState state() const;
  static std::unique_ptr<Impl> from_state(const GPState& state);
};

// ---------------------------------------------------------------------------------------
// State: primaries only; everything derived (pseudo-observations, K_mm's factor, residual
// variances, sites, LRU links) is recomputed by the same code, so predictions match bit for bit.
// ---------------------------------------------------------------------------------------

namespace {

StateValue real_value(double v) {
  StateValue s;
  s.kind = StateValue::Kind::real;
  s.real = v;
  return s;
}
StateValue int_value(int64_t v) {
  StateValue s;
  s.kind = StateValue::Kind::integer;
  s.integer = v;
  return s;
}
StateValue text_value(std::string v) {
  StateValue s;
  s.kind = StateValue::Kind::text;
  s.text = std::move(v);
  return s;
}
template <class T>
StateValue array_value(const T* data, std::vector<int64_t> shape) {
  StateValue s;
  int64_t total = 1;
  for (int64_t e : shape) total *= e;
  s.shape = std::move(shape);
  if constexpr (std::is_same_v<T, double>) {
    s.kind = StateValue::Kind::reals;
    s.reals.assign(data, data + total);
  } else if constexpr (std::is_same_v<T, int64_t>) {
    s.kind = StateValue::Kind::integers;
    s.integers.assign(data, data + total);
  } else {
    s.kind = StateValue::Kind::unsigneds;
    s.unsigneds.assign(data, data + total);
  }
  return s;
}

const char* kind_name(StateValue::Kind kind) {
  switch (kind) {
    case StateValue::Kind::real: return "a float";
    case StateValue::Kind::integer: return "an int";
    case StateValue::Kind::text: return "a str";
    case StateValue::Kind::reals: return "a float64 array";
    case StateValue::Kind::integers: return "an int64 array";
    case StateValue::Kind::unsigneds: return "a uint64 array";
  }
  return "?";
}

class StateReader {
 public:
  explicit StateReader(const GPState& state) : state_(state) {}

  const StateValue& get(const std::string& name, StateValue::Kind kind) const {
    auto it = state_.find(name);
    if (it == state_.end()) fail("state is missing '", name, "'");
    // Integers are acceptable where floats are expected (e.g. signal_var = 1 written by hand).
    if (it->second.kind != kind && !(kind == StateValue::Kind::real && it->second.kind == StateValue::Kind::integer))
      fail("state['", name, "'] must be ", kind_name(kind), ", got ", kind_name(it->second.kind));
    return it->second;
  }
  double real(const std::string& name) const {
    const StateValue& v = get(name, StateValue::Kind::real);
    return v.kind == StateValue::Kind::integer ? static_cast<double>(v.integer) : v.real;
  }
  int64_t integer(const std::string& name) const { return get(name, StateValue::Kind::integer).integer; }
  const std::string& text(const std::string& name) const { return get(name, StateValue::Kind::text).text; }

  template <class T>
  const std::vector<T>& array(const std::string& name, std::vector<int64_t> shape) const {
    constexpr StateValue::Kind kind = std::is_same_v<T, double>    ? StateValue::Kind::reals
                                      : std::is_same_v<T, int64_t> ? StateValue::Kind::integers
                                                                   : StateValue::Kind::unsigneds;
    const StateValue& v = get(name, kind);
    if (v.shape != shape) {
      std::ostringstream want, got;
      for (int64_t e : shape) want << e << ",";
      for (int64_t e : v.shape) got << e << ",";
      fail("state['", name, "'] has shape (", got.str(), ") but (", want.str(), ") is expected");
    }
    if constexpr (std::is_same_v<T, double>) {
      for (size_t i = 0; i < v.reals.size(); ++i)
        if (!std::isfinite(v.reals[i])) fail("state['", name, "'] holds a non-finite value ", v.reals[i], " at flat index ", i);
      return v.reals;
    } else if constexpr (std::is_same_v<T, int64_t>) {
      return v.integers;
    } else {
      return v.unsigneds;
    }
  }

  void reject_unknown(const std::vector<std::string>& known) const {
    for (const auto& [name, value] : state_)
      if (std::find(known.begin(), known.end(), name) == known.end()) fail("state has an unknown entry '", name, "'");
  }

 private:
  const GPState& state_;
};

}  // namespace

GPState SuccessGP::Impl::state() const {
  GPState s;
  s["format_version"] = int_value(kSuccessGPStateVersion);
  s["dim"] = int_value(cfg.dim);
  s["lengthscale_fixed"] = real_value(cfg.lengthscale);
  s["signal_var"] = real_value(cfg.signal_var);
  s["prior_mean_fixed"] = int_value(cfg.fixed_prior_mean ? 1 : 0);
  s["prior_mean"] = real_value(cfg.prior_mean);
  s["forgetting"] = real_value(cfg.forgetting);
  s["capacity"] = int_value(cfg.capacity);
  s["mode"] = text_value(gp_mode_name(cfg.mode));
  s["noise"] = text_value(noise_model_name(cfg.noise));
  s["jitter"] = real_value(cfg.jitter);
  s["clip"] = real_value(cfg.clip);
  s["proba"] = text_value(proba_method_name(cfg.proba));
  s["num_inducing"] = int_value(cfg.num_inducing);
  s["auto_exact_max"] = int_value(cfg.auto_exact_max);
  s["calibration_window"] = int_value(cfg.calibration_window);

  s["step"] = int_value(step);
  s["seq_counter"] = int_value(static_cast<int64_t>(seq_counter));
  s["lengthscale"] = real_value(std::isnan(ell) ? -1.0 : ell);
  s["lengthscale_provisional"] = int_value(ell_provisional ? 1 : 0);
  s["lengthscale_count"] = int_value(ell_count);
  s["lengthscale_inserts"] = int_value(ell_inserts);

  s["keys"] = array_value(keys.data(), {size});
  s["embeddings"] = array_value(emb.data(), {size, d});
  s["successes"] = array_value(k_eff.data(), {size});
  s["trials"] = array_value(n_eff.data(), {size});
  s["observed_step"] = array_value(t_obs.data(), {size});
  std::vector<int64_t> stamps(seq.begin(), seq.begin() + size);
  s["recency"] = array_value(stamps.data(), {size});
  if (cfg.noise == NoiseModel::laplace) s["linearisation"] = array_value(f_lin.data(), {size});

  s["num_inducing_used"] = int_value(m);
  s["inducing_points"] = array_value(z.data(), {m, d});
  s["features"] = array_value(phi.data(), {m > 0 ? size : 0, m});
  RowMatrix info = m > 0 ? RowMatrix(s_info.triangularView<Eigen::Lower>()) : RowMatrix(0, 0);
  s["information"] = array_value(info.data(), {m, m});
  s["information_targets"] = array_value(c_info.data(), {m});
  s["information_weights"] = array_value(e_info.data(), {m});
  s["coverage_reference"] = real_value(delta_ref);
  s["coverage_average"] = real_value(delta_ema);
  s["inducing_selected_at"] = int_value(size_at_selection);
  s["cache_keys"] = array_value(cache_keys.data(), {cache_rows});
  s["cache_embeddings"] = array_value(cache_emb.data(), {cache_rows, d});
  s["cache_features"] = array_value(cache_phi.data(), {cache_rows, m});

  s["calibration_offset"] = real_value(calibration.offset());
  s["calibration_log_scale"] = real_value(calibration.log_scale());
  const auto& records = calibration.records();
  const auto r = static_cast<int64_t>(records.size());
  std::vector<int64_t> record_steps(records.size());
  std::vector<double> record_values(records.size() * 4);
  for (size_t i = 0; i < records.size(); ++i) {
    const LogitCalibration::Record& record = records[i];
    record_steps[i] = record.step;
    const double values[4] = {record.mean, record.var, record.successes, record.trials};
    std::copy_n(values, 4, &record_values[i * 4]);
  }
  s["calibration_record_steps"] = array_value(record_steps.data(), {r});
  s["calibration_records"] = array_value(record_values.data(), {r, 4});
  return s;
}

std::unique_ptr<SuccessGP::Impl> SuccessGP::Impl::from_state(const GPState& state) {
  const StateReader r(state);
  auto version_it = state.find("format_version");
  if (version_it == state.end())
    fail("state has no 'format_version': it was not written by SuccessGP.state_dict()");
  const bool has_version = version_it->second.kind == StateValue::Kind::integer;
  const int64_t version = has_version ? version_it->second.integer : 0;
  if (version != 1 && version != kSuccessGPStateVersion) {
    std::ostringstream got;
    if (has_version) got << version;
    else got << "(" << kind_name(version_it->second.kind) << ")";
    fail("state format_version ", got.str(), " is not supported: vipfast ", VIPFAST_VERSION,
         " reads SuccessGP state format_versions 1 and ", kSuccessGPStateVersion);
  }
  const bool calibrated = version >= 2;
  if (!calibrated)
    for (const auto& [name, value] : state)
      if (name.rfind("calibration_", 0) == 0) fail("state['", name, "'] belongs to format_version 2, not 1");
  r.reject_unknown({"format_version", "dim", "lengthscale_fixed", "signal_var", "prior_mean_fixed", "prior_mean",
                    "forgetting", "capacity", "mode", "noise", "jitter", "clip", "proba", "num_inducing",
                    "auto_exact_max", "step", "seq_counter", "lengthscale", "lengthscale_provisional",
                    "lengthscale_count", "lengthscale_inserts", "keys", "embeddings", "successes", "trials",
                    "observed_step", "recency", "linearisation", "num_inducing_used", "inducing_points", "features", "information",
                    "information_targets", "information_weights", "coverage_reference", "coverage_average", "inducing_selected_at",
                    "cache_keys", "cache_embeddings", "cache_features", "calibration_window", "calibration_offset",
                    "calibration_log_scale", "calibration_record_steps", "calibration_records"});

  SuccessGPConfig cfg;
  cfg.dim = r.integer("dim");
  cfg.lengthscale = r.real("lengthscale_fixed");
  cfg.signal_var = r.real("signal_var");
  cfg.fixed_prior_mean = r.integer("prior_mean_fixed") != 0;
  cfg.prior_mean = r.real("prior_mean");
  cfg.forgetting = r.real("forgetting");
  cfg.capacity = r.integer("capacity");
  cfg.mode = parse_gp_mode(r.text("mode"));
  cfg.noise = parse_noise_model(r.text("noise"));
  cfg.jitter = r.real("jitter");
  cfg.clip = r.real("clip");
  cfg.proba = parse_proba_method(r.text("proba"));
  cfg.num_inducing = r.integer("num_inducing");
  cfg.auto_exact_max = r.integer("auto_exact_max");
  cfg.calibration_window = calibrated ? r.integer("calibration_window") : 0;
  validate_config(cfg);
  auto impl = std::make_unique<Impl>(cfg);
  Impl& g = *impl;
  const int64_t d = cfg.dim;

  g.step = r.integer("step");
  if (g.step < 0) fail("state['step'] = ", g.step, " is negative");
  const int64_t seq_counter = r.integer("seq_counter");
  if (seq_counter < 0) fail("state['seq_counter'] = ", seq_counter, " is negative");
  g.seq_counter = static_cast<uint64_t>(seq_counter);
  const double ell = r.real("lengthscale");
  if (!(std::isfinite(ell) && (ell >= kMinLengthscale || ell == -1.0))) fail("state['lengthscale'] = ", ell, " is invalid");
  g.ell = ell > 0 ? ell : kNaN;
  if (cfg.lengthscale > 0 && g.ell != cfg.lengthscale) fail("state['lengthscale'] disagrees with state['lengthscale_fixed']");
  g.ell_provisional = r.integer("lengthscale_provisional") != 0;
  g.ell_count = r.integer("lengthscale_count");
  g.ell_inserts = r.integer("lengthscale_inserts");
  if (g.ell_count < 0 || g.ell_inserts < 0) fail("state lengthscale bookkeeping is negative");

  const StateValue& key_entry = r.get("keys", StateValue::Kind::unsigneds);
  if (key_entry.shape.size() != 1) fail("state['keys'] must be 1-D");
  const int64_t n = key_entry.shape[0];
  if (n > cfg.capacity) fail("state holds ", n, " keys but its capacity is ", cfg.capacity);
  const auto& keys = r.array<uint64_t>("keys", {n});
  const auto& emb = r.array<double>("embeddings", {n, d});
  const auto& succ = r.array<double>("successes", {n});
  const auto& trials = r.array<double>("trials", {n});
  const auto& observed = r.array<int64_t>("observed_step", {n});
  const auto& recency = r.array<int64_t>("recency", {n});
  if (n > 0 && std::isnan(g.ell)) fail("state has stored keys but no lengthscale");
  const bool laplace = cfg.noise == NoiseModel::laplace;
  if (!laplace && state.count("linearisation")) fail("state['linearisation'] belongs to noise='laplace' only");
  const std::vector<double> no_linearisation;
  const auto& linearisation = laplace ? r.array<double>("linearisation", {n}) : no_linearisation;

  g.ensure_slots(n);
  g.update_of_slot.assign(static_cast<size_t>(g.slots), -1);
  g.size = n;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (!(trials[i] > 0 && succ[i] >= 0 && succ[i] <= trials[i]))
      fail("state has invalid counts for key ", keys[i], ": successes ", succ[i], ", trials ", trials[i]);
    if (observed[i] < 0 || observed[i] > g.step) fail("state['observed_step'][", i, "] = ", observed[i], " is outside [0, step]");
    if (recency[i] <= 0 || static_cast<uint64_t>(recency[i]) > g.seq_counter)
      fail("state['recency'][", i, "] = ", recency[i], " is outside [1, seq_counter]");
    const double* row = &emb[i * d];
    const double norm2 = sum_squares(row, d);
    if (!(std::abs(norm2 - 1.0) < 1e-6)) fail("state['embeddings'][", i, "] is not unit length");
    if (!g.index.emplace(keys[i], i).second) fail("state['keys'] repeats key ", keys[i]);
    g.keys[i] = keys[i];
    std::copy_n(row, d, &g.emb[i * d]);
    g.sqn[i] = norm2;
    g.k_eff[i] = succ[i];
    g.n_eff[i] = trials[i];
    g.t_obs[i] = observed[i];
    g.seq[i] = static_cast<uint64_t>(recency[i]);
    if (laplace) g.f_lin[i] = linearisation[i];
    g.set_pseudo_observation(i);
    order[i] = i;
  }
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return g.seq[a] < g.seq[b]; });
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0 && g.seq[order[i]] == g.seq[order[i - 1]]) fail("state['recency'] repeats a value");
    g.push_front(order[i]);
  }

  const int64_t m = r.integer("num_inducing_used");
  if (m < 0 || m > cfg.num_inducing) fail("state['num_inducing_used'] = ", m, " is outside [0, num_inducing]");
  if (m > 0 && n == 0) fail("state has inducing points but no stored keys");
  if (m > 0 && !g.fast_active()) fail("state has fast-mode sums but mode '", gp_mode_name(cfg.mode), "' would not use them");
  if (m == 0 && n > 0 && g.fast_active()) fail("state stores keys in fast mode but has no inducing points");
  g.m = m;
  const auto& zs = r.array<double>("inducing_points", {m, d});
  const auto& feats = r.array<double>("features", {m > 0 ? n : 0, m});
  const auto& info = r.array<double>("information", {m, m});
  const auto& targets = r.array<double>("information_targets", {m});
  const auto& weights = r.array<double>("information_weights", {m});
  g.delta_ref = r.real("coverage_reference");
  g.delta_ema = r.real("coverage_average");
  if (!(std::isfinite(g.delta_ref) && std::isfinite(g.delta_ema))) fail("state coverage statistics are not finite");
  g.size_at_selection = r.integer("inducing_selected_at");
  if (g.size_at_selection < 0 || g.size_at_selection > cfg.capacity)
    fail("state['inducing_selected_at'] = ", g.size_at_selection, " is outside [0, capacity]");
  const auto& cache_keys = r.get("cache_keys", StateValue::Kind::unsigneds);
  if (cache_keys.shape.size() != 1) fail("state['cache_keys'] must be 1-D");
  const int64_t rows = cache_keys.shape[0];
  const auto& cache_emb = r.array<double>("cache_embeddings", {rows, d});
  const auto& cache_phi = r.array<double>("cache_features", {rows, m});
  if (rows > 0 && m == 0) fail("state has cached features but no inducing points");
  if (m > 0) {
    g.z = zs;
    g.z_sq.resize(static_cast<size_t>(m));
    for (int64_t k = 0; k < m; ++k) g.z_sq[k] = sum_squares(&g.z[k * d], d);
    g.factor_inducing_kernel();
    g.phi.assign(static_cast<size_t>(g.slots * m), 0.0);
    std::copy(feats.begin(), feats.end(), g.phi.begin());
    for (int64_t slot = 0; slot < n; ++slot) {
      g.delta[slot] = g.residual_variance(&g.phi[slot * m]);
      g.site[slot] = g.tau[slot] / (1.0 + g.tau[slot] * g.delta[slot]);
    }
    g.s_info = Eigen::MatrixXd::Zero(m, m);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j <= i; ++j) g.s_info(i, j) = info[i * m + j];
    for (int64_t i = 0; i < m; ++i)
      if (g.s_info(i, i) < 0) fail("state['information'] has a negative diagonal entry at ", i);
    Eigen::MatrixXd precision = g.s_info.selfadjointView<Eigen::Lower>();
    precision.diagonal().array() += 1.0;
    if (Eigen::LLT<Eigen::MatrixXd>(precision).info() != Eigen::Success)
      fail("state['information'] is not positive semi-definite");
    g.c_info = ConstVecMap(targets.data(), m);
    g.e_info = ConstVecMap(weights.data(), m);
    g.cache_rows = rows;
    g.cache_keys.assign(cache_keys.unsigneds.begin(), cache_keys.unsigneds.end());
    g.cache_emb = cache_emb;
    g.cache_phi = cache_phi;
    for (int64_t i = 0; i < rows; ++i) g.cache_index[g.cache_keys[i]] = i;
  }
  if (calibrated) {
    const StateValue& steps = r.get("calibration_record_steps", StateValue::Kind::integers);
    if (steps.shape.size() != 1) fail("state['calibration_record_steps'] must be 1-D");
    const int64_t count = steps.shape[0];
    const auto& values = r.array<double>("calibration_records", {count, 4});
    std::vector<LogitCalibration::Record> records(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      if (steps.integers[i] > g.step) fail("state['calibration_record_steps'][", i, "] = ", steps.integers[i], " is after step ", g.step);
      records[i] = {steps.integers[i], values[i * 4], values[i * 4 + 1], values[i * 4 + 2], values[i * 4 + 3]};
    }
    g.calibration.restore(r.real("calibration_offset"), r.real("calibration_log_scale"), std::move(records));
  }
  return impl;
}

// ---------------------------------------------------------------------------------------
// Public wrapper
// ---------------------------------------------------------------------------------------

SuccessGP::SuccessGP(const SuccessGPConfig& config) {
  validate_config(config);
  impl_ = std::make_unique<Impl>(config);
}

SuccessGP::~SuccessGP() = default;

void SuccessGP::observe(int64_t count, const uint64_t* keys, const double* embeddings, const double* successes,
                        const int64_t* trials) {
  std::lock_guard<std::mutex> lock(mutex_);
  impl_->observe(count, keys, embeddings, successes, trials);
}

void SuccessGP::advance(int64_t steps) {
  std::lock_guard<std::mutex> lock(mutex_);
  impl_->advance(steps);
}

void SuccessGP::predict(int64_t count, const uint64_t* keys, const double* embeddings, const PredictOutputs& out) {
  std::lock_guard<std::mutex> lock(mutex_);
  impl_->predict(count, keys, embeddings, out);
}

const SuccessGPConfig& SuccessGP::config() const { return impl_->cfg; }

int64_t SuccessGP::num_stored() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return impl_->size;
}

int64_t SuccessGP::step() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return impl_->step;
}

double SuccessGP::lengthscale() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return impl_->ell;
}

double SuccessGP::prior_mean() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return impl_->running_prior_mean();
}

GPMode SuccessGP::active_mode() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return impl_->fast_active() && impl_->m > 0 ? GPMode::fast : GPMode::exact;
}

int64_t SuccessGP::num_inducing_used() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return impl_->m;
}

PseudoObservations SuccessGP::pseudo_observations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Impl& g = *impl_;
  PseudoObservations out;
  const auto n = static_cast<size_t>(g.size);
  out.keys.assign(g.keys.begin(), g.keys.begin() + n);
  out.embeddings.assign(g.emb.begin(), g.emb.begin() + n * g.d);
  out.targets.assign(g.y.begin(), g.y.begin() + n);
  out.successes.assign(g.k_eff.begin(), g.k_eff.begin() + n);
  out.trials.assign(g.n_eff.begin(), g.n_eff.begin() + n);
  if (g.cfg.noise == NoiseModel::laplace) out.linearisation.assign(g.f_lin.begin(), g.f_lin.begin() + n);
  out.noise_var.resize(n);
  for (size_t i = 0; i < n; ++i) out.noise_var[i] = 1.0 / (g.tau[i] * g.decay(g.step - g.t_obs[i]));
  return out;
}

std::pair<double, double> SuccessGP::calibration() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const LogitCalibration& c = impl_->calibration;
  return {c.offset(), std::exp(c.log_scale())};
}

GPState SuccessGP::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return impl_->state();
}

std::unique_ptr<SuccessGP> SuccessGP::from_state(const GPState& state) {
  auto impl = Impl::from_state(state);
  auto gp = std::unique_ptr<SuccessGP>(new SuccessGP(impl->cfg));
  gp->impl_ = std::move(impl);
  return gp;
}

}  // namespace vipfast
