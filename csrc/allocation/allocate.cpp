// vipfast::allocate: checks the whole problem, then runs the threshold search on its gain model.
#include <algorithm>
#include <cmath>
#include <limits>

#include "internal.hpp"
#include "models.hpp"
#include "search.hpp"
#include "vipfast/fail.hpp"

namespace vipfast {
namespace allocation {
namespace {

constexpr double kLargest = std::numeric_limits<double>::max();

struct WeightSummary {
  double root_sum;
  bool valid;
};

// One pass: the square roots the shared model's guesses use. sqrt turns a negative or NaN weight
// into NaN and +inf stays inf, so a finite sum of roots proves every weight finite and >= 0.
WeightSummary scan_weights(const double* weights, int64_t num_prompts, double* roots) {
  double root_sum = 0;
#pragma omp simd reduction(+ : root_sum)
  for (int64_t q = 0; q < num_prompts; ++q) {
    roots[q] = std::sqrt(weights[q]);
    root_sum += roots[q];
  }
  return {root_sum, root_sum <= kLargest};
}

// weight_exponent for the largest weight, which lies in [(root_sum / Q)^2, root_sum^2]: looked up
// only when that range reaches beyond the safe scales.
int shared_weight_exponent(const double* weights, int64_t num_prompts, double root_sum, double largest_unit_gain) {
  if (!(root_sum > 0) || !(largest_unit_gain > 0)) return 0;
  const int unit_log = std::ilogb(largest_unit_gain);
  const int low_log = 2 * std::ilogb(root_sum / static_cast<double>(num_prompts)), high_log = 2 * std::ilogb(root_sum) + 2;
  if (low_log + unit_log > -400 && high_log + unit_log < 400) return 0;
  return weight_exponent(*std::max_element(weights, weights + num_prompts), largest_unit_gain);
}

// Spare units and the per-prompt range they are spread over.
struct Spread {
  int64_t spare, steps, num_prompts;
  bool trivial() const {  // none to place, or every one
    int64_t all = 0;
    return spare == 0 || (!__builtin_mul_overflow(steps, num_prompts, &all) && all == spare);
  }
};

void fill_trivial(const Spread& spread, int64_t min_rollouts, int64_t* counts) {
  std::fill(counts, counts + spread.num_prompts, min_rollouts + (spread.spare == 0 ? 0 : spread.steps));
}

// Least-squares slope of k against t_k = u_k^(-1/2), the value of sqrt(w / lambda) from which
// unit k is taken; 0 when there is no line to fit.
double fitted_slope(const double* unit_gains, int64_t positive_steps) {
  if (positive_steps < 2) return 0.0;
  double mean_t = 0, mean_k = 0;
  for (int64_t k = 0; k < positive_steps; ++k) {
    mean_t += 1.0 / std::sqrt(unit_gains[k]);
    mean_k += static_cast<double>(k);
  }
  mean_t /= static_cast<double>(positive_steps);
  mean_k /= static_cast<double>(positive_steps);
  double covariance = 0, variance = 0;
  for (int64_t k = 0; k < positive_steps; ++k) {
    const double dt = 1.0 / std::sqrt(unit_gains[k]) - mean_t;
    covariance += dt * (static_cast<double>(k) - mean_k);
    variance += dt * dt;
  }
  const double alpha = covariance / variance;
  return alpha > 0 && std::isfinite(alpha) ? alpha : 0.0;
}

// The guess line through the point where the mean count's unit starts to be taken: there,
// floor(alpha * t_k + beta) = k + 1.
template <class Units>
CountGuess guess_through_mean(const Units& units, double alpha, const Spread& spread, int64_t positive_steps) {
  const int64_t mean = std::clamp<int64_t>(spread.spare / std::max<int64_t>(spread.num_prompts, 1), 0, positive_steps - 1);
  const double beta = static_cast<double>(mean) + 1.0 - alpha / std::sqrt(units(mean));
  return {alpha, beta, positive_steps};
}

template <class Units>
void solve_shared(const double* weights, const Spread& spread, int64_t min_rollouts, Units units, double alpha,
                  int64_t positive_steps, int64_t* counts) {
  const int64_t Q = spread.num_prompts;
  Workspace& workspace = thread_workspace();
  workspace.roots.resize(static_cast<size_t>(Q));
  double* roots = workspace.roots.data();
  WeightSummary summary = scan_weights(weights, Q, roots);
  if (!summary.valid) fail_on_weights(weights, Q);
  if (spread.trivial()) return fill_trivial(spread, min_rollouts, counts);
  const int exponent = shared_weight_exponent(weights, Q, summary.root_sum, units(0));
  if (exponent != 0) {
    workspace.scaled_weights.resize(static_cast<size_t>(Q));
    for (int64_t q = 0; q < Q; ++q) workspace.scaled_weights[q] = std::ldexp(weights[q], exponent);
    weights = workspace.scaled_weights.data();
    summary = scan_weights(weights, Q, roots);
  }
  const CountGuess guess = alpha > 0 ? guess_through_mean(units, alpha, spread, positive_steps) : CountGuess{0, 0, 0};
  SharedModel<Units> model(weights, roots, summary.root_sum, Q, units, spread.steps, guess);
  ThresholdSearch<SharedModel<Units>>(model, min_rollouts, spread.spare, counts, workspace).run();
}

void allocate_estimator(const CostModel& model, const Bounds& b, int64_t spare, int64_t* counts) {
  check_estimator_domain(model.estimator, b.min_rollouts);
  const int64_t L = b.min_rollouts;
  // No prompt can take more than every spare unit, which bounds an unbounded range.
  const Spread spread{spare, std::min(b.max_rollouts - L, spare), b.num_prompts};
  // Unit k is taken while sqrt(w / lambda) exceeds about n - 1/2 (rloo) or n + 3/2 (drgrpo), n = L + k: slope 1.
  if (L + spread.steps < kTabulatedRollouts) {
    const TabulatedUnits units(estimator_unit_gain_table(model.estimator) + L);
    solve_shared(model.weights, spread, L, units, 1.0, spread.steps, counts);
  } else {
    solve_shared(model.weights, spread, L, EstimatorUnits(model.estimator, L), 1.0, spread.steps, counts);
  }
}

void allocate_curve(const CostModel& model, const Bounds& b, int64_t spare, int64_t* counts) {
  const int64_t L = b.min_rollouts;
  const Spread spread{spare, b.max_rollouts - L, b.num_prompts};
  // Padded by one gain each side so the neighbours of any count in [0, steps] can be read.
  std::vector<double>& padded = thread_workspace().unit_gains;
  padded.assign(static_cast<size_t>(spread.steps + 2), 0.0);
  double* unit_gains = padded.data() + 1;
  row_gains(model.curve, spread.steps + 1, L, /*non_increasing=*/true, /*prompt=*/-1, unit_gains);
  const int64_t positive_steps = std::partition_point(unit_gains, unit_gains + spread.steps,
                                                      [](double u) { return u > 0; }) - unit_gains;
  solve_shared(model.weights, spread, L, TabulatedUnits(unit_gains), fitted_slope(unit_gains, positive_steps),
               positive_steps, counts);
}

void allocate_table(const CostModel& model, const Bounds& b, int64_t spare, int64_t* counts) {
  const int64_t L = b.min_rollouts;
  const Spread spread{spare, b.max_rollouts - L, b.num_prompts};
  TableModel gains(model.weights, model.table, b.num_prompts, L, spread.steps, thread_workspace());
  ThresholdSearch<TableModel> search(gains, L, spare, counts, thread_workspace());
  // Even when the counts are known the rows are checked: the search's first pass does both.
  if (spread.trivial())
    search.run_from(spare == 0 ? INFINITY : -INFINITY);
  else
    search.run();
}

}  // namespace
}  // namespace allocation

void allocate(const CostModel& model, const Bounds& bounds, int64_t* counts) {
  using namespace allocation;
  check_bounds(bounds);
  if (model.table == nullptr && model.weights == nullptr)
    fail("weights are required unless the costs are a per-prompt table");
  const int64_t spare = bounds.budget - bounds.num_prompts * bounds.min_rollouts;
  if (model.table != nullptr)
    allocate_table(model, bounds, spare, counts);
  else if (model.curve != nullptr)
    allocate_curve(model, bounds, spare, counts);
  else
    allocate_estimator(model, bounds, spare, counts);
  trim_workspace(thread_workspace());
}

}  // namespace vipfast
