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

// argmin over n in [lo, hi] of w * phi(n) + lambda * n.
double relaxed_count(Estimator estimator, double w, double lambda, double lo, double hi) {
  if (w == 0) return lo;
  const double target = lambda / w;
  if (!(marginal_variance(estimator, lo) > target)) return lo;
  if (marginal_variance(estimator, hi) >= target) return hi;
  if (estimator == Estimator::rloo) return std::clamp(1.0 + std::sqrt(w / lambda), lo, hi);
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

struct RelaxedPoint {
  double lambda = 0;
  double total = 0;
  std::vector<double> counts;  // (Q)
};

// Units the weighted prompts cannot use even at lambda -> 0 go to zero-weight prompts, equally.
void absorb_in_zero_weights(const double* weights, int64_t num_prompts, double units, std::vector<double>& counts) {
  const auto zero_weight = std::count(weights, weights + num_prompts, 0.0);
  const double share = units / static_cast<double>(zero_weight);
  for (int64_t q = 0; q < num_prompts; ++q)
    if (weights[q] == 0) counts[q] += share;
}

// The weights divided by the largest: the optimum depends on w / lambda only, and this keeps the
// multiplier's search inside the normal doubles whatever the weights' scale (subnormals included).
std::vector<double> normalised(const double* weights, int64_t num_prompts) {
  const double largest = num_prompts == 0 ? 0.0 : *std::max_element(weights, weights + num_prompts);
  std::vector<double> scaled(weights, weights + num_prompts);
  if (largest > 0)
    for (double& w : scaled) w /= largest;
  return scaled;
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
  const std::vector<double> weights = normalised(model.weights, Q);
  const int64_t spare = b.budget - Q * b.min_rollouts;
  const double lo_n = static_cast<double>(b.min_rollouts);
  const double hi_n = static_cast<double>(b.min_rollouts + std::min(b.max_rollouts - b.min_rollouts, spare));
  const double budget = static_cast<double>(b.budget);
  auto evaluate = [&](double lambda, RelaxedPoint& point) {
    point.lambda = lambda;
    point.total = 0;
    point.counts.resize(static_cast<size_t>(Q));
    for (int64_t q = 0; q < Q; ++q)
      point.total += point.counts[q] = relaxed_count(model.estimator, weights[q], lambda, lo_n, hi_n);
  };
  // At the largest first gain (1 * -phi'(L)) every prompt sits at its minimum; shrink lambda
  // until the budget is reached, then bisect geometrically and interpolate the last bracket
  // linearly so the counts add up to the budget exactly.
  RelaxedPoint hi, lo, mid;
  evaluate(marginal_variance(model.estimator, lo_n), hi);
  lo = hi;
  while (lo.total < budget && lo.lambda > std::numeric_limits<double>::min()) {
    hi = lo;
    evaluate(lo.lambda / 16, lo);
  }
  if (lo.total < budget) {
    absorb_in_zero_weights(weights.data(), Q, budget - lo.total, lo.counts);
    std::copy(lo.counts.begin(), lo.counts.end(), counts);
    return;
  }
  for (int i = 0; i < 200 && hi.total < budget && lo.total > budget; ++i) {
    const double lambda = std::sqrt(lo.lambda) * std::sqrt(hi.lambda);
    if (!(lambda > lo.lambda && lambda < hi.lambda)) break;
    evaluate(lambda, mid);
    std::swap(mid.total > budget ? lo : hi, mid);
  }
  const double spread = lo.total - hi.total;
  const double theta = spread > 0 ? (budget - hi.total) / spread : 0.0;
  for (int64_t q = 0; q < Q; ++q) counts[q] = hi.counts[q] + theta * (lo.counts[q] - hi.counts[q]);
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
