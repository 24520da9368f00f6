// The continuous relaxation (allocate_relaxed) and the objective of given counts.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "internal.hpp"
#include "vipfast/fail.hpp"

namespace vipfast {
namespace allocation {
namespace {

// -phi'(n), the continuous marginal gain per unit weight.
double marginal_variance(Estimator estimator, double n) {
  if (estimator == Estimator::rloo) return 1.0 / ((n - 1.0) * (n - 1.0));
  return (n - 2.0) / (n * n * n);
}

// argmin over n in [lo, hi] of phi(n) + target * n, i.e. -phi'(n) = target = lambda / w.
double relaxed_count(Estimator estimator, double target, double lo, double hi) {
  if (!(marginal_variance(estimator, lo) > target)) return lo;
  if (marginal_variance(estimator, hi) >= target) return hi;
  if (estimator == Estimator::rloo) return std::clamp(1.0 + 1.0 / std::sqrt(target), lo, hi);
  // (n - 2) - target n^3 is concave; Newton from the right of its larger root, starting
  // at min(hi, target^-1/2) where it is negative, converges monotonically.
  double n = std::min(hi, 1.0 / std::sqrt(target));
  for (int i = 0; i < 100; ++i) {
    const double f = (n - 2.0) - target * n * n * n;
    const double next = n - f / (1.0 - 3.0 * target * n * n);
    if (!(next < n)) break;
    n = next;
  }
  return std::clamp(n, lo, hi);
}

// The relaxed counts as functions of s = log sqrt(1 / lambda): prompt q's target lambda / w_q is
// exp(-2 (s + log sqrt(w_q))). In this log domain every weight ratio the doubles allow fits, where
// lambda itself would underflow for subnormal or widely spread weights.
class RelaxedCounts {
 public:
  RelaxedCounts(Estimator estimator, const double* weights, int64_t num_prompts, double lo, double hi)
      : estimator_(estimator), lo_(lo), hi_(hi), log_roots_(static_cast<size_t>(num_prompts)) {
    for (int64_t q = 0; q < num_prompts; ++q) log_roots_[q] = 0.5 * std::log(weights[q]);  // -inf for 0
  }

  double total(double s, std::vector<double>& counts) const {
    counts.resize(log_roots_.size());
    double sum = 0;
    for (size_t q = 0; q < log_roots_.size(); ++q)
      sum += counts[q] = relaxed_count(estimator_, std::exp(-2.0 * (s + log_roots_[q])), lo_, hi_);
    return sum;
  }

  // Every weighted prompt sits at lo below the first s, and at hi above the second.
  std::pair<double, double> range() const {
    double smallest = std::numeric_limits<double>::infinity(), largest = -smallest;
    for (double r : log_roots_)
      if (std::isfinite(r)) smallest = std::min(smallest, r), largest = std::max(largest, r);
    const double start = -0.5 * std::log(marginal_variance(estimator_, lo_));
    const double end = -0.5 * std::log(marginal_variance(estimator_, hi_));
    return {start - largest - 1.0, end - smallest + 1.0};
  }

 private:
  Estimator estimator_;
  double lo_, hi_;
  std::vector<double> log_roots_;
};

// Units the weighted prompts cannot use even when all sit at hi go to the zero-weight prompts, equally.
void absorb_in_zero_weights(const double* weights, int64_t num_prompts, double units, double* counts) {
  const auto zero_weight = std::count(weights, weights + num_prompts, 0.0);
  const double share = units / static_cast<double>(zero_weight);
  for (int64_t q = 0; q < num_prompts; ++q)
    if (weights[q] == 0) counts[q] += share;
}

}  // namespace
}  // namespace allocation

void allocate_relaxed(const CostModel& model, const Bounds& b, double* counts) {
  using namespace allocation;
  if (model.curve != nullptr || model.table != nullptr) {
    std::vector<int64_t> exact(static_cast<size_t>(std::max<int64_t>(b.num_prompts, 0)));
    allocate(model, b, exact.data());
    std::copy(exact.begin(), exact.end(), counts);
    return;
  }
  check_bounds(b);
  if (model.weights == nullptr) fail("weights are required unless the costs are a per-prompt table");
  check_weights(model.weights, b.num_prompts);
  check_estimator_domain(model.estimator, b.min_rollouts);
  const int64_t Q = b.num_prompts;
  const int64_t spare = b.budget - Q * b.min_rollouts;
  const double lo_n = static_cast<double>(b.min_rollouts);
  const double hi_n = static_cast<double>(b.min_rollouts + std::min(b.max_rollouts - b.min_rollouts, spare));
  const double budget = static_cast<double>(b.budget);
  const RelaxedCounts relaxed(model.estimator, model.weights, Q, lo_n, hi_n);
  // Bisection on s between all-at-lo and all-at-hi, to adjacent doubles; then the last bracket is
  // interpolated linearly so the counts add up to the budget exactly.
  auto [s_lo, s_hi] = relaxed.range();
  std::vector<double> fewer, more;
  double fewer_total = relaxed.total(s_lo, fewer), more_total = relaxed.total(s_hi, more);
  if (!(more_total > budget)) {
    std::copy(more.begin(), more.end(), counts);
    if (more_total < budget) absorb_in_zero_weights(model.weights, Q, budget - more_total, counts);
    return;
  }
  std::vector<double> middle;
  while (fewer_total < budget) {
    const double s = 0.5 * (s_lo + s_hi);
    if (!(s > s_lo && s < s_hi)) break;
    const double total = relaxed.total(s, middle);
    if (total > budget) {
      s_hi = s, more_total = total, std::swap(more, middle);
    } else {
      s_lo = s, fewer_total = total, std::swap(fewer, middle);
    }
  }
  const double spread = more_total - fewer_total;
  const double theta = spread > 0 ? (budget - fewer_total) / spread : 0.0;
  for (int64_t q = 0; q < Q; ++q) counts[q] = fewer[q] + theta * (more[q] - fewer[q]);
}

double allocation_objective(const CostModel& model, const Bounds& b, const int64_t* counts) {
  using namespace allocation;
  const int64_t Q = b.num_prompts, L = b.min_rollouts, U = b.max_rollouts;
  if (L < 1) fail("min_rollouts must be >= 1, got ", L);
  if (L > U) fail("min_rollouts (", L, ") exceeds max_rollouts (", U, ")");
  if (model.weights != nullptr) check_weights(model.weights, Q);
  const bool estimator = model.curve == nullptr && model.table == nullptr;
  if (estimator && model.weights == nullptr) fail("weights are required unless the costs are a per-prompt table");
  if (estimator) check_estimator_domain(model.estimator, L);
  const int64_t width = estimator ? 0 : U - L + 1;
  if (!estimator) {  // the same checks allocate makes: finite, convex, and non-increasing when shared
    std::vector<double>& gains = thread_workspace().unit_gains;
    gains.resize(static_cast<size_t>(width));
    if (model.curve != nullptr) row_gains(model.curve, width, L, /*non_increasing=*/true, -1, gains.data());
    for (int64_t q = 0; model.table != nullptr && q < Q; ++q)
      if (!scan_row(model.table + q * width, width, 1.0, 0.0).exactly_convex)
        row_gains(model.table + q * width, width, L, /*non_increasing=*/false, q, gains.data());
  }
  double total = 0;
  for (int64_t q = 0; q < Q; ++q) {
    const int64_t n = counts[q];
    if (n < L || n > U) fail("counts[", q, "] = ", n, " is outside [", L, ", ", U, "]");
    const double w = model.weights == nullptr ? 1.0 : model.weights[q];
    if (estimator)
      total += w * estimator_variance(model.estimator, static_cast<double>(n));
    else if (model.curve != nullptr)
      total += w * model.curve[n - L];
    else
      total += w * model.table[q * width + (n - L)];
  }
  return total;
}

}  // namespace vipfast
