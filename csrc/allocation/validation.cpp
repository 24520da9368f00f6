// Checks on the allocation inputs; every failure names the value and what was expected.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "internal.hpp"
#include "vipfast/fail.hpp"

namespace vipfast::allocation {
namespace {

constexpr double kLargest = std::numeric_limits<double>::max();

// Rounding error of a computed value v is at most eps |v| + denorm_min / 2 (the standard model
// with gradual underflow); a violation within a few such errors is rounding, more is an error.
bool exceeds_rounding(double violation, double scale) {
  constexpr double eps = std::numeric_limits<double>::epsilon();
  constexpr double tiny = std::numeric_limits<double>::denorm_min();
  return violation > 16 * (eps * scale + tiny);
}

std::string row_name(int64_t prompt) {
  return prompt < 0 ? std::string("curve") : "costs of prompt " + std::to_string(prompt);
}

}  // namespace

void check_bounds(const Bounds& b) {
  const int64_t Q = b.num_prompts, L = b.min_rollouts, U = b.max_rollouts;
  if (Q < 0) fail("num_prompts must be >= 0, got ", Q);
  if (L < 1) fail("min_rollouts must be >= 1, got ", L);
  if (L > U) fail("min_rollouts (", L, ") exceeds max_rollouts (", U, ")");
  int64_t lowest = 0;
  const bool lowest_overflows = __builtin_mul_overflow(Q, L, &lowest);
  // budget <= Q * U  <=>  U >= ceil(budget / Q), which needs no product.
  const bool too_high = Q == 0 ? b.budget > 0 : U < b.budget / Q + (b.budget % Q > 0);
  if (!lowest_overflows && b.budget >= lowest && !too_high) return;
  if (lowest_overflows)
    fail("budget ", b.budget, " is infeasible for ", Q, " prompts with ", L, " <= n <= ", U,
         ": it must be at least ", Q, " * ", L, ", which exceeds the int64 range");
  int64_t highest = 0;
  const std::string upper = __builtin_mul_overflow(Q, U, &highest) ? "beyond int64" : std::to_string(highest);
  fail("budget ", b.budget, " is infeasible for ", Q, " prompts with ", L, " <= n <= ", U, ": it must lie in [",
       lowest, ", ", upper, "]");
}

void check_estimator_domain(Estimator estimator, int64_t min_rollouts) {
  const EstimatorSpec& spec = estimator_spec(estimator);
  if (min_rollouts < spec.min_rollouts)
    fail("min_rollouts = ", min_rollouts, " is below the domain of estimator '", spec.name, "', which needs n >= ",
         spec.min_rollouts);
}

void fail_on_weights(const double* weights, int64_t num_prompts) {
  for (int64_t q = 0; q < num_prompts; ++q) {
    const double w = weights[q];
    if (!std::isfinite(w)) fail("weights[", q, "] is ", w, "; weights must be finite and >= 0");
    if (w < 0) fail("weights[", q, "] = ", w, " is negative; weights must be finite and >= 0");
  }
  fail("weights were reported invalid but every entry is finite and >= 0");
}

void check_weights(const double* weights, int64_t num_prompts) {
  bool bad = false;
  for (int64_t q = 0; q < num_prompts; ++q) bad |= !(weights[q] >= 0 && weights[q] <= kLargest);
  if (bad) fail_on_weights(weights, num_prompts);
}

// Cloned for AVX2: this pass reads the whole table, and the portable build has only SSE2.
__attribute__((target_clones("avx2", "default"))) RowScan scan_row(const double* row, int64_t width, double weight,
                                                                   double lambda) {
  // x * 0 is 0 for finite x and NaN otherwise: `poison` stays 0 only if every difference is finite.
  double rise = -kLargest, poison = row[0] * 0.0, above = 0;
  const int64_t inner = width - 2;
#pragma omp simd reduction(max : rise) reduction(+ : poison, above)
  for (int64_t k = 0; k < inner; ++k) {
    const double left = row[k] - row[k + 1], right = row[k + 1] - row[k + 2];
    rise = std::max(rise, right - left);
    poison += left * 0.0;
    above += weight * left > lambda ? 1.0 : 0.0;
  }
  if (width >= 2) {
    const double last = row[width - 2] - row[width - 1];
    poison += last * 0.0;
    above += weight * last > lambda ? 1.0 : 0.0;
  }
  return {poison == 0 && !(rise > 0), static_cast<int64_t>(above)};
}

namespace {

// The first rule the row breaks, as an error; called once row_gains found that it breaks one.
[[noreturn]] void fail_on_row(const double* row, int64_t width, int64_t min_rollouts, bool non_increasing,
                              int64_t prompt) {
  for (int64_t k = 0; k < width; ++k)
    if (!std::isfinite(row[k]))
      fail(row_name(prompt), " has a non-finite value ", row[k], " at n = ", min_rollouts + k);
  double previous = 0;
  for (int64_t k = 0; k + 1 < width; ++k) {
    const int64_t n = min_rollouts + k;
    double gain = row[k] - row[k + 1];
    if (!std::isfinite(gain))
      fail(row_name(prompt), " has values too far apart to subtract at n = ", n, ": ", row[k], " and ", row[k + 1]);
    const double scale = std::max(std::abs(row[k]), std::abs(row[k + 1]));
    if (non_increasing && exceeds_rounding(-gain, scale))
      fail(row_name(prompt), " must be non-increasing but rises at n = ", n + 1, ": phi(", n, ") = ", row[k],
           " < phi(", n + 1, ") = ", row[k + 1]);
    if (non_increasing) gain = std::max(gain, 0.0);
    if (k > 0 && exceeds_rounding(gain - previous, std::max(scale, std::abs(row[k - 1]))))
      fail(row_name(prompt), " is not discretely convex at n = ", n, ": phi(", n - 1, ") - phi(", n, ") = ", previous,
           " < phi(", n, ") - phi(", n + 1, ") = ", gain);
    previous = k > 0 ? std::min(gain, previous) : gain;
  }
  fail(row_name(prompt), " was reported invalid but breaks no rule");
}

}  // namespace

void row_gains(const double* row, int64_t width, int64_t min_rollouts, bool non_increasing, int64_t prompt,
               double* gains) {
  // Branch-free: in rows whose gains fall below their values' rounding (the tails of Knapsack-RL
  // rows), about every other step needs projecting.
  bool bad = !(std::abs(row[0]) <= kLargest);
  for (int64_t k = 0; k + 1 < width; ++k) {
    double gain = row[k] - row[k + 1];
    bad |= !(std::abs(gain) <= kLargest);
    const double scale = std::max(std::abs(row[k]), std::abs(row[k + 1]));
    bad |= non_increasing && exceeds_rounding(-gain, scale);
    gain = non_increasing ? std::max(gain, 0.0) : gain;
    if (k > 0) {
      bad |= exceeds_rounding(gain - gains[k - 1], std::max(scale, std::abs(row[k - 1])));
      gain = std::min(gain, gains[k - 1]);
    }
    gains[k] = gain;
  }
  if (bad) fail_on_row(row, width, min_rollouts, non_increasing, prompt);
}

int weight_exponent(double largest_weight, double largest_unit_gain) {
  if (!(largest_weight > 0) || !(largest_unit_gain > 0)) return 0;
  const int weight_log = std::ilogb(largest_weight), gain_log = weight_log + std::ilogb(largest_unit_gain);
  if (gain_log > -400 && gain_log < 400) return 0;
  return std::clamp(-gain_log, -1000 - weight_log, 1000 - weight_log);
}

Workspace& thread_workspace() {
  thread_local Workspace workspace;
  return workspace;
}

namespace {

template <class T>
void trim(std::vector<T>& buffer) {
  constexpr size_t kKeepBytes = size_t{64} << 20;
  if (buffer.capacity() * sizeof(T) > kKeepBytes) std::vector<T>().swap(buffer);
}

}  // namespace

void trim_workspace(Workspace& workspace) {
  trim(workspace.roots);
  trim(workspace.scaled_weights);
  trim(workspace.unit_gains);
  trim(workspace.projected);
  trim(workspace.projected_row);
  trim(workspace.samples);
  trim(workspace.first_left);
  trim(workspace.last_taken);
  trim(workspace.most_left);
  trim(workspace.least_taken);
  trim(workspace.window);
  trim(workspace.window_start);
  trim(workspace.entries);
  trim(workspace.candidates);
  trim(workspace.off);
}

}  // namespace vipfast::allocation
