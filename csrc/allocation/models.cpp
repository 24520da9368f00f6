#include "models.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "counting.hpp"

namespace vipfast::allocation {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Sum over prompts of the guessed counts before flooring, clamped to [0, top], and its
// derivative's factor: the roots of the prompts not clamped.
struct GuessSum {
  double total, unclamped_roots;
};

GuessSum guess_sum(const double* roots, int64_t num_prompts, double rate, double offset, double top) {
  double total = 0, unclamped = 0;
#pragma omp simd reduction(+ : total, unclamped)
  for (int64_t q = 0; q < num_prompts; ++q) {
    const double units = roots[q] * rate + offset;
    total += std::min(std::max(units, 0.0), top);
    unclamped += (units > 0.0 && units < top) ? roots[q] : 0.0;
  }
  return {total, unclamped};
}

}  // namespace

template <class Units>
Total SharedModel<Units>::count_all(double lambda, int64_t min_rollouts, int64_t* counts, Boundary boundary) const {
  int64_t most = 0;  // int64 sums are faster; Q * steps bounds every sum
  if (!__builtin_mul_overflow(num_prompts_, steps_, &most))
    return count_all_into<int64_t>(lambda, min_rollouts, counts, boundary);
  return count_all_into<Total>(lambda, min_rollouts, counts, boundary);
}

template <class Units>
template <class Sum>
Sum SharedModel<Units>::count_all_into(double lambda, int64_t min_rollouts, int64_t* counts, Boundary boundary) const {
  // Members copied to locals: the stores to `counts` could otherwise alias them.
  const double* weights = weights_;
  const double* roots = roots_;
  const Units units = units_;
  const int64_t Q = num_prompts_, steps = steps_;
  // lambda <= 0 or infinite makes the guess NaN or clamped; the fix-up below is exact regardless.
  const double scale = guess_.alpha / std::sqrt(lambda), beta = guess_.beta;
  const double top = static_cast<double>(steps);
  Sum total = 0;
  for (int64_t q = 0; q < Q; ++q) {
    const double w = weights[q];
    double guess = roots[q] * scale + beta;
    guess = guess > 0 ? guess : 0.0;  // NaN too
    guess = guess < top ? guess : top;
    int64_t count = std::min(static_cast<int64_t>(guess), steps);
    double first_left = count < steps ? w * units(count) : -kInf;
    double last_taken = count > 0 ? w * units(count - 1) : kInf;
    if ((first_left > lambda) | !(last_taken > lambda)) {
      count = count_from([&](int64_t k) { return w * units(k); }, lambda, count, steps);
      first_left = count < steps ? w * units(count) : -kInf;
      last_taken = count > 0 ? w * units(count - 1) : kInf;
    }
    counts[q] = min_rollouts + count;
    boundary.first_left[q] = first_left;
    boundary.last_taken[q] = last_taken;
    total += count;
  }
  return total;
}

// Newton's method on the sum of the guesses, piecewise linear and increasing in
// s = lambda^(-1/2), safeguarded by bisection. The integer counts then miss the budget by about
// sqrt(Q) units (their rounding), so the search starts next to the answer.
template <class Units>
FirstProbe SharedModel<Units>::first_probe(int64_t units) const {
  const double alpha = guess_.alpha;
  if (!(alpha > 0) || !(root_sum_ > 0)) return {sampled_multiplier(*this, units, thread_workspace().samples), kNaN};
  const double target = static_cast<double>(units), top = static_cast<double>(guess_.positive_steps);
  const double offset = guess_.beta - 0.5;  // a floor loses half a unit on average
  const double Q = static_cast<double>(num_prompts_);
  const double tolerance = 0.5 + 0.05 * std::sqrt(Q) + 1e-12 * target;
  double s = std::max(target - Q * offset, 1.0) / (alpha * root_sum_);
  double s_lo = 0, s_hi = kInf, slope = 0;
  for (int iteration = 0; iteration < 64; ++iteration) {
    const GuessSum sum = guess_sum(roots_, num_prompts_, alpha * s, offset, top);
    const double total = sum.total;
    slope = alpha * sum.unclamped_roots;
    const double miss = total - target;
#ifdef VIPFAST_DEBUG_SEARCH
    fprintf(stderr, "newton %d miss %g\n", iteration, miss);
#endif
    if (std::abs(miss) <= tolerance) break;
    (miss > 0 ? s_hi : s_lo) = s;
    double next = slope > 0 ? s - miss / slope : kNaN;
    const bool newton = next > s_lo && next < s_hi;
    if (!newton) next = std::isfinite(s_hi) ? 0.5 * (s_lo + s_hi) : 2 * s;
    if (next == s) break;
    s = next;
    // Close to the answer the sum is nearly linear: the exact counts check this step anyway.
    if (newton && std::abs(miss) <= 0.05 * target) break;
  }
  return {1.0 / (s * s), -0.5 * std::log(2.0) * s * slope};
}

template class SharedModel<TabulatedUnits>;
template class SharedModel<EstimatorUnits>;

TableModel::TableModel(const double* weights, const double* table, int64_t num_prompts, int64_t min_rollouts,
                       int64_t steps, Workspace& workspace)
    : weights_(weights), table_(table), num_prompts_(num_prompts), steps_(steps) {
  double largest_weight = 0;
  if (weights != nullptr) {
    check_weights(weights, num_prompts);
    largest_weight = num_prompts == 0 ? 0.0 : *std::max_element(weights, weights + num_prompts);
  }
  const int64_t width = steps + 1;
  double largest_gain = 0;
  workspace.projected.clear();
  for (int64_t q = 0; q < num_prompts; ++q) {
    const double* row = table + q * width;
    // Gains are monotone, so a row's largest in magnitude is its first or its last.
    double first = steps > 0 ? row[0] - row[1] : 0.0, last = steps > 0 ? row[steps - 1] - row[steps] : 0.0;
    if (!row_is_exactly_convex(row, width)) {
      if (!any_projected_) workspace.projected_row.assign(static_cast<size_t>(num_prompts), -1);
      any_projected_ = true;
      const size_t offset = workspace.projected.size();
      workspace.projected_row[static_cast<size_t>(q)] = static_cast<int64_t>(offset) / std::max<int64_t>(steps, 1);
      workspace.projected.resize(offset + static_cast<size_t>(steps));
      const double* gains = workspace.projected.data() + offset;
      row_gains(row, width, min_rollouts, /*non_increasing=*/false, q, workspace.projected.data() + offset);
      first = steps > 0 ? gains[0] : 0.0;
      last = steps > 0 ? gains[steps - 1] : 0.0;
    }
    largest_gain = std::max({largest_gain, std::abs(first), std::abs(last)});
  }
  if (any_projected_) {
    projected_row_ = workspace.projected_row.data();
    projected_ = workspace.projected.data();
  }
  const int exponent = weight_exponent(largest_weight, largest_gain);
  if (exponent != 0) {
    workspace.scaled_weights.resize(static_cast<size_t>(num_prompts));
    for (int64_t q = 0; q < num_prompts; ++q) workspace.scaled_weights[q] = std::ldexp(weights[q], exponent);
    weights_ = workspace.scaled_weights.data();
  }
}

Total TableModel::count_all(double lambda, int64_t min_rollouts, int64_t* counts, Boundary boundary) const {
  Total total = 0;
  for (int64_t q = 0; q < num_prompts_; ++q) {
    const double w = weights_ == nullptr ? 1.0 : weights_[q];
    int64_t count;
    if (any_projected_ && projected_row_[q] >= 0) {
      const double* gains = projected_ + projected_row_[q] * steps_;
      count = count_within([&](int64_t k) { return w * gains[k]; }, lambda, 0, steps_);
    } else {
      const double* row = table_ + q * (steps_ + 1);
      count = count_within([&](int64_t k) { return w * (row[k] - row[k + 1]); }, lambda, 0, steps_);
    }
    counts[q] = min_rollouts + count;
    boundary.first_left[q] = count < steps_ ? gain(q, count) : -kInf;
    boundary.last_taken[q] = count > 0 ? gain(q, count - 1) : kInf;
    total += count;
  }
  return total;
}

FirstProbe TableModel::first_probe(int64_t units) const {
  return {sampled_multiplier(*this, units, thread_workspace().samples), kNaN};
}

}  // namespace vipfast::allocation
