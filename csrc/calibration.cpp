#include "vipfast/calibration.hpp"
#include "vipfast/fail.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace vipfast {
namespace {

constexpr double kPi = 3.141592653589793238462643383279502884;
// The map stays within these bounds whatever the records say: b in [e^-5, e^5], |a| <= 50 logits.
constexpr double kMaxLogScale = 5.0;
constexpr double kMaxOffset = 50.0;
constexpr int kMaxIterations = 50;
constexpr int kMaxHalvings = 40;
constexpr double kStepTolerance = 1e-10;
constexpr double kDecrementTolerance = 1e-13;
// Predictions outside these bounds (a prior mean of 1e300, say) say nothing a bounded map could use,
// and would overflow the objective: they are not recorded.
constexpr double kMaxRecordedLogit = 1e6;
constexpr double kMaxRecordedVar = 1e12;

bool usable(double mean, double var) {
  return std::isfinite(mean) && std::abs(mean) <= kMaxRecordedLogit && std::isfinite(var) && var >= 0 &&
         var <= kMaxRecordedVar;
}

// The log posterior of (a, beta = log b); with derivatives, its gradient, its observed information
// (minus the Hessian) and its Fisher information (the expected one).
struct Evaluation {
  double value = 0.0;
  double grad_a = 0.0, grad_beta = 0.0;
  double obs_aa = 0.0, obs_ab = 0.0, obs_bb = 0.0;
  double info_aa = 0.0, info_ab = 0.0, info_bb = 0.0;
};

Evaluation evaluate(const std::vector<LogitCalibration::Record>& records, const std::vector<double>& weights, double a,
                    double beta, bool derivatives) {
  const double b = std::exp(beta);
  Evaluation e;
  e.value = -0.5 * (a * a + beta * beta);
  e.grad_a = -a;
  e.grad_beta = -beta;
  e.obs_aa = e.obs_bb = e.info_aa = e.info_bb = 1.0;
  for (size_t i = 0; i < records.size(); ++i) {
    const LogitCalibration::Record& r = records[i];
    const double w = weights[i];
    const double c = kPi * r.var / 8.0;
    const double spread2 = 1.0 + c * b * b;
    const double spread = std::sqrt(spread2);
    const double mapped = a + b * r.mean;
    const double z = mapped / spread;
    // log s(z) and log s(-z) = log s(z) - z from one exp and one log1p.
    const double tail = std::exp(-std::abs(z));
    const double log_p = (z >= 0 ? 0.0 : z) - std::log1p(tail);
    e.value += w * (r.successes * log_p + (r.trials - r.successes) * (log_p - z));
    if (!derivatives) continue;
    const double p = z >= 0 ? 1.0 / (1.0 + tail) : tail / (1.0 + tail);
    const double q = z >= 0 ? tail / (1.0 + tail) : 1.0 / (1.0 + tail);
    // z's derivatives in (a, b), then in (a, beta): d/dbeta = b d/db.
    const double s3 = spread2 * spread;
    const double z_a = 1.0 / spread;
    const double z_b = r.mean / spread - mapped * c * b / s3;
    const double z_ab = -c * b / s3;
    const double z_bb = (-2.0 * r.mean * c * b - mapped * c) / s3 + 3.0 * mapped * c * c * b * b / (s3 * spread2);
    const double z_beta = b * z_b, z_abeta = b * z_ab, z_betabeta = b * z_b + b * b * z_bb;
    const double residual = w * (r.successes - r.trials * p);
    e.grad_a += residual * z_a;
    e.grad_beta += residual * z_beta;
    const double info = w * r.trials * p * q;
    e.info_aa += info * z_a * z_a;
    e.info_ab += info * z_a * z_beta;
    e.info_bb += info * z_beta * z_beta;
    e.obs_ab -= residual * z_abeta;  // z_aa = 0
    e.obs_bb -= residual * z_betabeta;
  }
  e.obs_aa += e.info_aa - 1.0;
  e.obs_ab += e.info_ab;
  e.obs_bb += e.info_bb - 1.0;
  return e;
}

}  // namespace

LogitCalibration LogitCalibration::recorded(int64_t step, int64_t count, const double* mean, const double* var,
                                            const double* successes, const int64_t* trials) const {
  LogitCalibration next(window_);
  next.offset_ = offset_;
  next.log_scale_ = log_scale_;
  if (!enabled() || count <= 0) {
    next.records_ = records_;
    return next;
  }
  next.records_.reserve(records_.size() + static_cast<size_t>(count));
  for (const Record& r : records_)
    if (step - r.step < window_) next.records_.push_back(r);
  for (int64_t i = 0; i < count; ++i)
    if (trials[i] > 0 && usable(mean[i], var[i]))
      next.records_.push_back({step, mean[i], var[i], successes[i], static_cast<double>(trials[i])});
  next.fit(step);
  return next;
}

// Newton's method from the previous map (Fisher scoring where the Hessian is not negative
// definite), each step halved until the log posterior does not fall.
void LogitCalibration::fit(int64_t step) {
  std::vector<double> weights(records_.size());
  const double decay = 1.0 - 1.0 / static_cast<double>(window_);
  for (size_t i = 0; i < records_.size(); ++i)
    weights[i] = std::pow(decay, static_cast<double>(step - records_[i].step));
  double a = offset_, beta = log_scale_;
  Evaluation current = evaluate(records_, weights, a, beta, true);
  for (int iteration = 0; iteration < kMaxIterations; ++iteration) {
    const double obs_det = current.obs_aa * current.obs_bb - current.obs_ab * current.obs_ab;
    const bool newton = current.obs_aa > 0 && obs_det > 0;
    const double haa = newton ? current.obs_aa : current.info_aa, hab = newton ? current.obs_ab : current.info_ab,
                 hbb = newton ? current.obs_bb : current.info_bb;
    const double det = newton ? obs_det : haa * hbb - hab * hab;  // Fisher's: >= 1, the prior's share
    double da = (hbb * current.grad_a - hab * current.grad_beta) / det;
    double dbeta = (haa * current.grad_beta - hab * current.grad_a) / det;
    // A coordinate held at its bound by a step that points outward stays there; the other takes
    // its own one-dimensional step, so the fit still reaches the best map on that edge.
    if (std::abs(beta) == kMaxLogScale && dbeta * beta > 0) {
      dbeta = 0.0;
      da = current.grad_a / haa;
    } else if (std::abs(a) == kMaxOffset && da * a > 0) {
      da = 0.0;
      dbeta = current.grad_beta / hbb;
    }
    if (!(std::isfinite(da) && std::isfinite(dbeta))) break;
    // The objective's predicted rise along the step: below rounding, no step can show a rise.
    if (da * current.grad_a + dbeta * current.grad_beta <= kDecrementTolerance * (1.0 + std::abs(current.value))) break;
    // The first trial is nearly always taken: it is evaluated with the derivatives the next step needs.
    double moved = -1.0;
    for (double t = 1.0; moved < 0 && t > std::ldexp(1.0, -kMaxHalvings); t *= 0.5) {
      const double next_a = std::clamp(a + t * da, -kMaxOffset, kMaxOffset);
      const double next_beta = std::clamp(beta + t * dbeta, -kMaxLogScale, kMaxLogScale);
      Evaluation trial = evaluate(records_, weights, next_a, next_beta, t == 1.0);
      if (!(trial.value >= current.value)) continue;
      moved = std::max(std::abs(next_a - a), std::abs(next_beta - beta));
      a = next_a;
      beta = next_beta;
      current = t == 1.0 ? trial : evaluate(records_, weights, a, beta, true);
    }
    if (moved < kStepTolerance) break;  // converged, or no step along the scoring direction helps
  }
  offset_ = a;
  log_scale_ = beta;
}

void LogitCalibration::apply(int64_t count, double* mean, double* var) const {
  if (!enabled()) return;
  const double b = std::exp(log_scale_);
  for (int64_t i = 0; i < count; ++i) {
    mean[i] = offset_ + b * mean[i];
    var[i] *= b * b;
  }
}

void LogitCalibration::restore(double offset, double log_scale, std::vector<Record> records) {
  if (!(std::isfinite(offset) && std::abs(offset) <= kMaxOffset))
    fail("calibration offset must be finite with |offset| <= ", kMaxOffset, ", got ", offset);
  if (!(std::isfinite(log_scale) && std::abs(log_scale) <= kMaxLogScale))
    fail("calibration log-scale must be finite with |log_scale| <= ", kMaxLogScale, ", got ", log_scale);
  if (!enabled() && (offset != 0.0 || log_scale != 0.0 || !records.empty()))
    fail("a calibration map or records without a calibration window");
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    if (!(usable(r.mean, r.var) && r.trials > 0 && r.successes >= 0 && r.successes <= r.trials && r.step >= 0))
      fail("calibration record ", i, " is invalid: step ", r.step, ", mean ", r.mean, ", var ", r.var, ", successes ",
           r.successes, ", trials ", r.trials);
  }
  offset_ = offset;
  log_scale_ = log_scale;
  records_ = std::move(records);
}

}  // namespace vipfast
