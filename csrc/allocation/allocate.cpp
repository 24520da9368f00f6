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
__attribute__((target_clones("avx2", "default"))) WeightSummary scan_weights(const double* weights, int64_t num_prompts,
                                                                            double* roots) {
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

// Solves the 3x3 system a x = b by Gaussian elimination with partial pivoting; false if singular.
bool solve3(double a[3][3], double b[3], double x[3]) {
  for (int col = 0; col < 3; ++col) {
    int pivot = col;
    for (int row = col + 1; row < 3; ++row)
      if (std::abs(a[row][col]) > std::abs(a[pivot][col])) pivot = row;
    if (!(std::abs(a[pivot][col]) > 0)) return false;
    std::swap(a[col], a[pivot]);
    std::swap(b[col], b[pivot]);
    for (int row = col + 1; row < 3; ++row) {
      const double factor = a[row][col] / a[col][col];
      for (int k = col; k < 3; ++k) a[row][k] -= factor * a[col][k];
      b[row] -= factor * b[col];
    }
  }
  for (int row = 2; row >= 0; --row) {
    double sum = b[row];
    for (int k = row + 1; k < 3; ++k) sum -= a[row][k] * x[k];
    x[row] = sum / a[row][row];
  }
  return std::isfinite(x[0]) && std::isfinite(x[1]) && std::isfinite(x[2]);
}

// The count guess: unit k is taken once x = sqrt(w / lambda) passes t_k = u_k^(-1/2), so prompt q
// takes floor(alpha x + beta + gamma / (x + 1)) units when k + 1 = alpha t_k + beta + gamma / (t_k + 1)
// holds at every level. That is fitted by least squares on the levels up to a few times the mean
// count (at most 4096): for phi ~ 1/n the t_k lie nearly on a line and the last term takes up its
// bend at small n. The estimators' lines have slope exactly 1 (`unit_slope`), which keeps guesses
// exact at counts far past the fitted levels. alpha = 0 means no guess (fewer than three positive
// gains, or a curve this form does not fit).
template <class Units>
CountGuess fit_guess(const Units& units, int64_t positive_steps, int64_t mean, bool unit_slope) {
  // 4 * mean + 16 capped at 4096 without forming it: mean may be near INT64_MAX / 4 for huge budgets
  const int64_t wanted = mean >= (4096 - 16) / 4 ? int64_t{4096} : std::max<int64_t>(16, 4 * mean + 16);
  const int64_t levels = std::min(positive_steps, wanted);
  if (levels < 3) return {0, 0, 0, positive_steps, mean};
  double normal[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}}, right[3] = {0, 0, 0};
  for (int64_t k = 0; k < levels; ++k) {
    const double t = 1.0 / std::sqrt(units(k)), basis[3] = {t, 1.0, 1.0 / (t + 1.0)};
    const double target = static_cast<double>(k + 1) - (unit_slope ? t : 0.0);
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) normal[i][j] += basis[i] * basis[j];
      right[i] += basis[i] * target;
    }
  }
  double fit[3] = {1.0, 0.0, 0.0};
  if (unit_slope) {  // only beta and gamma are free: the lower-right 2x2 system
    double reduced[3][3] = {{1, 0, 0}, {0, normal[1][1], normal[1][2]}, {0, normal[2][1], normal[2][2]}};
    double reduced_right[3] = {0, right[1], right[2]};
    if (!solve3(reduced, reduced_right, fit)) return {0, 0, 0, positive_steps, mean};
    fit[0] = 1.0;
  } else if (!solve3(normal, right, fit) || !(fit[0] > 0)) {
    return {0, 0, 0, positive_steps, mean};
  }
  if (std::abs(fit[2]) > 0x1p60) return {0, 0, 0, positive_steps, mean};
  // A bend worth less than a hundredth of a unit is not worth computing for every prompt.
  const double bend = std::abs(fit[2]) / (1.0 / std::sqrt(units(0)) + 1.0) < 0.01 ? 0.0 : fit[2];
  return {fit[0], fit[1], bend, positive_steps, mean};
}

template <class Units>
void solve_shared(const double* weights, const Spread& spread, int64_t min_rollouts, Units units,
                  int64_t positive_steps, bool unit_slope, int64_t* counts) {
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
  const CountGuess guess = fit_guess(units, positive_steps, spread.spare / std::max<int64_t>(Q, 1), unit_slope);
  SharedModel<Units> model(weights, roots, summary.root_sum, Q, units, spread.steps, guess);
  ThresholdSearch<SharedModel<Units>>(model, min_rollouts, spread.spare, counts, workspace).run();
}

void allocate_estimator(const CostModel& model, const Bounds& b, int64_t spare, int64_t* counts) {
  check_estimator_domain(model.estimator, b.min_rollouts);
  const int64_t L = b.min_rollouts;
  // No prompt can take more than every spare unit, which bounds an unbounded range.
  const Spread spread{spare, std::min(b.max_rollouts - L, spare), b.num_prompts};
  if (L + spread.steps < kTabulatedRollouts) {
    const TabulatedUnits units(estimator_unit_gain_table(model.estimator) + L, spread.steps);
    solve_shared(model.weights, spread, L, units, spread.steps, /*unit_slope=*/true, counts);
  } else {
    solve_shared(model.weights, spread, L, EstimatorUnits(model.estimator, L), spread.steps, /*unit_slope=*/true, counts);
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
  solve_shared(model.weights, spread, L, TabulatedUnits(unit_gains, spread.steps), positive_steps, /*unit_slope=*/false,
               counts);
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
