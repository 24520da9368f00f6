#include "models.hpp"

#include <algorithm>
#include <cmath>
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

__attribute__((target_clones("avx2", "default"))) GuessSum guess_sum(const double* roots, int64_t num_prompts, double rate,
                                                                     double offset, double top) {
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
  // A multiplier outside (0, inf) (zero weights, all units) leaves the guess meaningless but finite.
  const bool usable = lambda > 0 && lambda < kInf;
  const double inverse_root = usable ? 1.0 / std::sqrt(lambda) : 0.0, alpha = usable ? guess_.alpha : 0.0;
  // Bounded below so the guess converts to int64 without a floating-point clamp per prompt
  // (|gamma| <= 2^60 and x >= 0 keep every guess above -2^63).
  const double beta = usable ? std::max(guess_.beta, -0x1p62) : 0.0, gamma = usable ? guess_.gamma : 0.0;
  // Capped so the conversion stays in range when steps is near 2^63; the fix-up climbs the rest.
  const double top = std::min(static_cast<double>(steps), 0x1p62);
  // The exact count from a guess, with the gains next to it.
  const auto settle = [&](int64_t q, int64_t guess) {
    const double w = weights[q];
    const int64_t count = count_from([&](int64_t k) { return w * units(k); }, lambda, guess, steps);
    counts[q] = min_rollouts + count;
    boundary.set(q, count < steps ? w * units(count) : -kInf, count > 0 ? w * units(count - 1) : kInf);
    return count;
  };
  boundary.clear_blocks(Q);
  // The guess, clamped to the range (top may round above steps).
  const auto guess_of = [&](int64_t q) {
    const double x = roots[q] * inverse_root;
    return std::clamp<int64_t>(static_cast<int64_t>(std::min(alpha * x + beta + gamma / (x + 1.0), top)), 0, steps);
  };
  Sum total = 0;
  int64_t first = 0;  // prompts before it are counted already
  // The vectorised pass reads the unit gains from their table; counts beyond it are fixed up here,
  // so it is worth running only when most counts fit in the table.
  const int64_t cap = std::min({units.readable(), steps, int64_t{INT32_MAX} - 1});
  const bool most_fit = cap == steps || guess_.mean_count < cap / 2;
  if (usable && cap >= 0 && most_fit && guessed_counts_available()) {
    std::vector<int64_t>& off = thread_workspace().off;
    off.clear();
    total = guessed_counts({weights, roots, units.data(), Q, steps, min_rollouts, cap, lambda, inverse_root, alpha, beta,
                            gamma, counts,
                            boundary.first_left, boundary.last_taken, boundary.most_left, boundary.least_taken},
                           off);
    for (int64_t q : off) {
      const int64_t capped = counts[q] - min_rollouts;
      total += settle(q, guess_of(q)) - capped;  // from the uncapped guess
    }
    first = Q / Boundary::kBlock * Boundary::kBlock;
  }
  for (int64_t q = first; q < Q; ++q) {
    const double w = weights[q];
    const int64_t count = guess_of(q);  // no branches: the guesses' signs and sizes vary
    const double first_left = w * units(count), last_taken = w * units(count - 1);
    if (((first_left > lambda) & (count < steps)) | (!(last_taken > lambda) & (count > 0))) {
      total += settle(q, count);
      continue;
    }
    counts[q] = min_rollouts + count;
    boundary.set(q, count < steps ? first_left : -kInf, count > 0 ? last_taken : kInf);
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
  if (!(root_sum_ > 0)) return {0.0, kNaN};  // every weight zero: every gain is
  if (!(alpha > 0)) return sampled_probe(*this, units, thread_workspace().samples);
  const double target = static_cast<double>(units), top = static_cast<double>(guess_.positive_steps);
  // The guesses' last term taken at the mean level's threshold; a floor loses half a unit on average.
  const int64_t level = std::clamp<int64_t>(guess_.mean_count, 0, guess_.positive_steps - 1);
  const double offset = guess_.beta + guess_.gamma / (1.0 / std::sqrt(units_(level)) + 1.0) - 0.5;
  const double Q = static_cast<double>(num_prompts_);
  const double tolerance = 0.5 + 0.05 * std::sqrt(Q) + 1e-12 * target;
  double s = std::max(target - Q * offset, 1.0) / (alpha * root_sum_);
  double s_lo = 0, s_hi = kInf, slope = 0;
  for (int iteration = 0; iteration < 64; ++iteration) {
    const GuessSum sum = guess_sum(roots_, num_prompts_, alpha * s, offset, top);
    const double total = sum.total;
    slope = alpha * sum.unclamped_roots;
    const double miss = total - target;
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
  if (slope > 0 && num_prompts_ >= kBiasSampleMinimum) s -= guess_bias(1.0 / (s * s), s, offset, top) / slope;
  // d count / d log2(lambda) = -(ln 2 / 2) s d count / ds, and one octave spans 2^52 keys.
  return {1.0 / (s * s), -0.5 * std::log(2.0) * s * slope / 0x1p52};
}

// How much the exact counts exceed the guesses' sum, estimated on every 16th prompt. A straight
// line only approximates the thresholds t_k, so the sum is biased by a few hundredths of a unit per
// prompt: thousands of units at Q = 65536, for one percent of a pass.
template <class Units>
double SharedModel<Units>::guess_bias(double lambda, double s, double offset, double top) const {
  constexpr int64_t kStride = 16;
  double difference = 0;
  int64_t sampled = 0;
  for (int64_t q = 0; q < num_prompts_; q += kStride, ++sampled) {
    const double w = weights_[q], smooth = roots_[q] * guess_.alpha * s + offset;
    const int64_t hint = std::min(static_cast<int64_t>(std::clamp(smooth + 0.5, 0.0, std::min(top, 0x1p62))), steps_);
    const int64_t exact = count_from([&](int64_t k) { return w * units_(k); }, lambda, hint, steps_);
    difference += static_cast<double>(exact) - std::clamp(smooth, 0.0, top);
  }
  return difference / static_cast<double>(sampled) * static_cast<double>(num_prompts_);
}

template class SharedModel<TabulatedUnits>;
template class SharedModel<EstimatorUnits>;

TableModel::TableModel(const double* weights, const double* table, int64_t num_prompts, int64_t min_rollouts,
                       int64_t steps, Workspace& workspace)
    : weights_(weights), table_(table), num_prompts_(num_prompts), min_(min_rollouts), steps_(steps),
      workspace_(workspace) {
  if (weights == nullptr) return;
  check_weights(weights, num_prompts);
  const double largest = num_prompts == 0 ? 0.0 : *std::max_element(weights, weights + num_prompts);
  const int exponent = weight_exponent(largest, 1.0);
  if (exponent == 0) return;
  workspace.scaled_weights.resize(static_cast<size_t>(num_prompts));
  for (int64_t q = 0; q < num_prompts; ++q) workspace.scaled_weights[q] = std::ldexp(weights[q], exponent);
  weights_ = workspace.scaled_weights.data();
}

Total TableModel::count_all(double lambda, int64_t min_rollouts, int64_t* counts, Boundary boundary) {
  const int64_t width = steps_ + 1, kept = std::min(kWindow, steps_);
  workspace_.projected.clear();
  std::vector<double>& window = workspace_.window;
  std::vector<int64_t>& window_start = workspace_.window_start;
  window.resize(static_cast<size_t>(num_prompts_ * kWindow));
  window_start.resize(static_cast<size_t>(num_prompts_));
  window_ = nullptr;
  boundary.clear_blocks(num_prompts_);
  Total total = 0;
  for (int64_t q = 0; q < num_prompts_; ++q) {
    const double w = weights_ == nullptr ? 1.0 : weights_[q];
    const RowScan scan = scan_row(table_ + q * width, width, w, lambda);
    const int64_t count = scan.exactly_convex ? scan.above : project_row(q, lambda);
    const int64_t start = std::clamp<int64_t>(count - kWindow / 2, 0, steps_ - kept);
    window_start[q] = start;
    double* kept_gains = window.data() + q * kWindow;
    if (scan.exactly_convex) {
      const double* row = table_ + q * width + start;
      for (int64_t i = 0; i < kept; ++i) kept_gains[i] = w * (row[i] - row[i + 1]);  // as row_gain computes them
    } else {
      for (int64_t i = 0; i < kept; ++i) kept_gains[i] = row_gain(q, start + i);
    }
    counts[q] = min_rollouts + count;
    // The window holds count - 1 and count whenever they are steps of the row.
    boundary.set(q, count < steps_ ? kept_gains[count - start] : -kInf, count > 0 ? kept_gains[count - 1 - start] : kInf);
    total += count;
  }
  window_ = window.data();
  window_start_ = window_start.data();
  return total;
}

int64_t TableModel::project_row(int64_t q, double lambda) {
  if (!any_projected_) workspace_.projected_row.assign(static_cast<size_t>(num_prompts_), -1);
  any_projected_ = true;
  const size_t offset = workspace_.projected.size();
  workspace_.projected.resize(offset + static_cast<size_t>(steps_));
  row_gains(table_ + q * (steps_ + 1), steps_ + 1, min_, /*non_increasing=*/false, q, workspace_.projected.data() + offset);
  workspace_.projected_row[static_cast<size_t>(q)] = static_cast<int64_t>(offset) / std::max<int64_t>(steps_, 1);
  projected_row_ = workspace_.projected_row.data();
  projected_ = workspace_.projected.data();
  return count_within([&](int64_t k) { return row_gain(q, k); }, lambda, 0, steps_);
}

FirstProbe TableModel::first_probe(int64_t units) const {
  return sampled_probe(*this, units, thread_workspace().samples);
}

}  // namespace vipfast::allocation
