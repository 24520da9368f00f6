#include "vipfast/allocation.hpp"
#include "vipfast/fail.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace vipfast {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

int64_t checked_product(int64_t a, int64_t b, const char* what) {
  int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) fail(what, " overflows int64");
  return product;
}

void validate_bounds(const Bounds& b) {
  if (b.num_prompts < 0) fail("num_prompts must be >= 0, got ", b.num_prompts);
  if (b.min_rollouts < 1) fail("min_rollouts must be >= 1, got ", b.min_rollouts);
  if (b.min_rollouts > b.max_rollouts)
    fail("min_rollouts (", b.min_rollouts, ") exceeds max_rollouts (", b.max_rollouts, ")");
  const int64_t lowest = checked_product(b.num_prompts, b.min_rollouts, "num_prompts * min_rollouts");
  const int64_t highest = checked_product(b.num_prompts, b.max_rollouts, "num_prompts * max_rollouts");
  if (b.budget < lowest || b.budget > highest)
    fail("budget ", b.budget, " is infeasible for ", b.num_prompts, " prompts with ", b.min_rollouts,
         " <= n <= ", b.max_rollouts, ": it must lie in [", lowest, ", ", highest, "]");
}

void validate_weights(const double* weights, int64_t num_prompts) {
  for (int64_t q = 0; q < num_prompts; ++q) {
    const double w = weights[q];
    if (!std::isfinite(w)) fail("weights[", q, "] is ", w, "; weights must be finite and >= 0");
    if (w < 0) fail("weights[", q, "] = ", w, " is negative; weights must be finite and >= 0");
  }
}

void validate_estimator_domain(Estimator estimator, int64_t min_rollouts) {
  const int64_t domain = estimator_min_rollouts(estimator);
  if (min_rollouts < domain)
    fail("min_rollouts = ", min_rollouts, " is below the domain of estimator '",
         estimator_name(estimator), "', which needs n >= ", domain);
}

// Rounding in a user's table may break monotonicity by a few ulps; more than that is an error.
bool exceeds_rounding(double violation, double scale) {
  return violation > 16 * std::numeric_limits<double>::epsilon() * scale;
}

// Checks a row phi(L..U) and writes its marginal gains phi(n) - phi(n+1), made exactly
// non-increasing (and non-negative if `non_increasing`) so threshold counts are monotone.
void marginal_gains(const double* row, int64_t length, int64_t min_rollouts, bool non_increasing,
                    const char* row_name, double* gains) {
  for (int64_t k = 0; k < length; ++k)
    if (!std::isfinite(row[k]))
      fail(row_name, " has a non-finite value ", row[k], " at n = ", min_rollouts + k);
  for (int64_t k = 0; k + 1 < length; ++k) {
    const double gain = row[k] - row[k + 1];
    if (!std::isfinite(gain))
      fail(row_name, " has values too far apart to subtract at n = ", min_rollouts + k, ": ", row[k], " and ", row[k + 1]);
    const double scale = std::max(std::abs(row[k]), std::abs(row[k + 1]));
    if (non_increasing && exceeds_rounding(-gain, scale))
      fail(row_name, " must be non-increasing but rises at n = ", min_rollouts + k + 1, ": phi(",
           min_rollouts + k, ") = ", row[k], " < phi(", min_rollouts + k + 1, ") = ", row[k + 1]);
    gains[k] = non_increasing ? std::max(gain, 0.0) : gain;
    if (k > 0 && gains[k] > gains[k - 1]) {
      const double scale2 = std::max(scale, std::abs(row[k - 1]));
      if (exceeds_rounding(gains[k] - gains[k - 1], scale2))
        fail(row_name, " is not discretely convex at n = ", min_rollouts + k, ": phi(",
             min_rollouts + k - 1, ") - phi(", min_rollouts + k, ") = ", gains[k - 1], " < phi(",
             min_rollouts + k, ") - phi(", min_rollouts + k + 1, ") = ", gains[k]);
      gains[k] = gains[k - 1];
    }
  }
}

// ---------------------------------------------------------------------------------------
// Marginal gains: gain(q, k) = cost_q(L + k) - cost_q(L + k + 1), non-increasing in k.
// count_above(q, lambda) = #{k < m : gain(q, k) > lambda}, the units prompt q takes at
// multiplier lambda. Each model answers it in O(1) or O(log m).
// ---------------------------------------------------------------------------------------

// Walks a first guess to the exact count. Guesses are usually off by at most one, so the
// first correction each way is branch-free and the loops rarely run.
template <class Gain>
int64_t settle_count(int64_t guess, int64_t steps, double lambda, const Gain& gain) {
  int64_t count = std::clamp<int64_t>(guess, 0, steps);
  if (steps == 0) return 0;
  count += (count < steps) & (gain(std::min(count, steps - 1)) > lambda);
  count -= (count > 0) & !(gain(std::max<int64_t>(count - 1, 0)) > lambda);
  while (count < steps && gain(count) > lambda) ++count;
  while (count > 0 && !(gain(count - 1) > lambda)) --count;
  return count;
}

class EstimatorGains {
 public:
  EstimatorGains(const double* weights, Estimator estimator, int64_t min_rollouts, int64_t steps)
      : weights_(weights), estimator_(estimator), min_(min_rollouts), steps_(steps) {
    // Tabulated when short (the usual max_rollouts <= a few hundred) to keep divisions off the hot path.
    if (steps <= (int64_t{1} << 16)) {
      table_.resize(static_cast<size_t>(steps));
      for (int64_t k = 0; k < steps; ++k) table_[static_cast<size_t>(k)] = formula(k);
    }
  }

  double unit_gain(int64_t k) const { return table_.empty() ? formula(k) : table_[static_cast<size_t>(k)]; }
  double gain(int64_t q, int64_t k) const { return weights_[q] * unit_gain(k); }

  int64_t count_above(int64_t q, double lambda, double inv_lambda) const {
    const double w = weights_[q];
    if (!(lambda > 0)) return lambda < 0 ? steps_ : (w > 0 ? steps_ : 0);
    // Invert the closed form: rloo takes n while n(n-1) < w/lambda; drgrpo's gain ~ 1/n^3.
    // Both are >= 0, so truncation is floor; the cap keeps the cast in range.
    const double ratio = w > 0 ? w * inv_lambda : 0.0;  // 0 * inf would be NaN
    const double n_star = estimator_ == Estimator::rloo ? 0.5 + std::sqrt(0.25 + ratio) : std::cbrt(ratio) - 1.0;
    const double capped = std::min(std::max(n_star, 0.0), static_cast<double>(min_ + steps_ + 1));
    const int64_t guess = static_cast<int64_t>(capped) + 1 - min_;
    return settle_count(guess, steps_, lambda, [&](int64_t k) { return w * unit_gain(k); });
  }

  double unit_gain_at_mean(int64_t num_prompts, int64_t budget) const {
    const int64_t mean = budget / std::max<int64_t>(num_prompts, 1);
    return unit_gain(std::clamp<int64_t>(mean - min_, 0, steps_ - 1));
  }

 private:
  double formula(int64_t k) const {
    const double n = static_cast<double>(min_ + k);
    if (estimator_ == Estimator::rloo) return 1.0 / ((n - 1.0) * n);
    return (n * n - n - 1.0) / (n * n * (n + 1.0) * (n + 1.0));
  }

  const double* weights_;
  Estimator estimator_;
  int64_t min_;
  int64_t steps_;
  std::vector<double> table_;  // (m) unit gains, when m is small
};

class SharedCurveGains {
 public:
  SharedCurveGains(const double* weights, const double* curve, int64_t min_rollouts, int64_t steps)
      : weights_(weights), unit_(static_cast<size_t>(steps)) {
    marginal_gains(curve, steps + 1, min_rollouts, /*non_increasing=*/true, "curve", unit_.data());
  }
  double unit_gain(int64_t k) const { return unit_[static_cast<size_t>(k)]; }
  double gain(int64_t q, int64_t k) const { return weights_[q] * unit_gain(k); }
  int64_t count_above(int64_t q, double lambda, double /*inv_lambda*/) const {
    const double w = weights_[q];
    auto first_not_above = std::partition_point(unit_.begin(), unit_.end(),
                                                [&](double u) { return w * u > lambda; });
    return first_not_above - unit_.begin();
  }
  double unit_gain_at_mean(int64_t num_prompts, int64_t budget, int64_t min_rollouts) const {
    const int64_t mean = budget / std::max<int64_t>(num_prompts, 1);
    return unit_gain(std::clamp<int64_t>(mean - min_rollouts, 0, static_cast<int64_t>(unit_.size()) - 1));
  }

 private:
  const double* weights_;
  std::vector<double> unit_;  // (m)
};

class CostTableGains {
 public:
  CostTableGains(const double* weights, const double* table, int64_t num_prompts, int64_t min_rollouts,
                 int64_t steps)
      : steps_(steps), gains_(static_cast<size_t>(checked_product(num_prompts, steps, "table size"))) {
    const int64_t width = steps + 1;
    for (int64_t q = 0; q < num_prompts; ++q) {
      const std::string name = "costs of prompt " + std::to_string(q);
      double* row = gains_.data() + q * steps;
      marginal_gains(table + q * width, width, min_rollouts, /*non_increasing=*/false, name.c_str(), row);
      const double w = weights == nullptr ? 1.0 : weights[q];
      for (int64_t k = 0; k < steps; ++k) row[k] *= w;
    }
  }
  double gain(int64_t q, int64_t k) const { return gains_[static_cast<size_t>(q * steps_ + k)]; }
  int64_t count_above(int64_t q, double lambda, double /*inv_lambda*/) const {
    const double* row = gains_.data() + q * steps_;
    return std::partition_point(row, row + steps_, [&](double g) { return g > lambda; }) - row;
  }
  std::pair<double, double> range() const {
    auto [lo, hi] = std::minmax_element(gains_.begin(), gains_.end());
    return {*lo, *hi};
  }

 private:
  int64_t steps_;
  std::vector<double> gains_;  // (Q, m)
};

// ---------------------------------------------------------------------------------------
// Threshold search. The greedy optimum takes the R = budget - Q*L largest gains (ties: lower
// step, then lower prompt, so equal gains are spread level by level). We bracket the multiplier: S(hi) <= R <= S(lo) with
// S(lambda) = sum_q count_above(q, lambda), shrink the bracket by secant steps on a good
// first guess, then pick the leftover units among the gains in (lo, hi] by selection.
// ---------------------------------------------------------------------------------------

struct Candidate {
  double gain;
  int64_t prompt;
  int64_t step;
};

bool takes_precedence(const Candidate& a, const Candidate& b) {
  if (a.gain != b.gain) return a.gain > b.gain;
  if (a.step != b.step) return a.step < b.step;
  return a.prompt < b.prompt;
}

// Scratch buffers reused across calls on the same thread: fresh multi-megabyte allocations
// page-fault on every call, which at Q = 65536 cost as much as the whole solve.
struct Workspace {
  std::vector<int64_t> counts_lo, counts_hi, probe_counts, active;  // (Q)
  std::vector<double> roots;                                         // (Q)
};

Workspace& thread_workspace() {
  thread_local Workspace workspace;
  return workspace;
}

template <class Gains>
class ThresholdSearch {
 public:
  // `positive` says every gain is >= 0, so the multiplier is searched on a log scale.
  ThresholdSearch(const Gains& gains, int64_t num_prompts, int64_t steps, int64_t units, bool positive)
      : gains_(gains),
        num_prompts_(num_prompts),
        steps_(steps),
        units_(units),
        positive_(positive),
        counts_lo_(thread_workspace().counts_lo),
        counts_hi_(thread_workspace().counts_hi),
        probe_counts_(thread_workspace().probe_counts),
        active_(thread_workspace().active) {}

  // lo: S(lo) = Q*m (every unit taken); hi: S(hi) = 0. guess: a first multiplier, or NaN.
  void solve(double lo, double hi, double guess, int64_t* extra) {
    const auto Q = static_cast<size_t>(num_prompts_);
    lo_ = {lo, num_prompts_ * steps_};
    hi_ = {hi, 0};
    counts_lo_.assign(Q, steps_);
    counts_hi_.assign(Q, 0);
    probe_counts_.resize(Q);
    active_.resize(Q);
    for (size_t q = 0; q < Q; ++q) active_[q] = static_cast<int64_t>(q);
    const int64_t enough = std::max<int64_t>(32, num_prompts_ / 32);
    for (int iteration = 0; iteration < 200 && lo_.total - hi_.total > enough; ++iteration) {
      double lambda = iteration == 0 && std::isfinite(guess) ? guess : propose();
      if (!inside(lambda)) lambda = bisect();
      if (!inside(lambda)) break;  // the bracket is as tight as doubles allow
      const int64_t total = evaluate(lambda);
      if (total == units_) {
        std::copy(counts_hi_.begin(), counts_hi_.end(), extra);
        for (int64_t q : active_) extra[q] = probe_counts_[q];
        return;
      }
      move_bracket(lambda, total);
    }
    place_leftover_units(extra);
  }

 private:
  struct Point {
    double lambda;
    int64_t total;  // S(lambda)
  };

  bool inside(double lambda) const { return lambda > lo_.lambda && lambda < hi_.lambda; }

  // Only prompts whose count differs between the bracket ends can change.
  int64_t evaluate(double lambda) {
    const double inv_lambda = 1.0 / lambda;
    int64_t total = hi_.total;
    if (probes_ == 0) {
      for (int64_t q : active_) total += probe_counts_[q] = gains_.count_above(q, lambda, inv_lambda);
      return total;
    }
    for (int64_t q : active_) {
      const int64_t count = count_within_bracket(q, lambda, inv_lambda);
      probe_counts_[q] = count;
      total += count - counts_hi_[q];
    }
    return total;
  }

  // count_above(q, lambda) lies in [counts_hi, counts_lo]; near the answer most prompts sit at
  // one end, which one comparison of a known gain confirms.
  int64_t count_within_bracket(int64_t q, double lambda, double inv_lambda) const {
    const int64_t most = counts_lo_[q], least = counts_hi_[q];
    if (most > 0 && gains_.gain(q, most - 1) > lambda) return most;
    if (least < steps_ && !(gains_.gain(q, least) > lambda)) return least;
    return gains_.count_above(q, lambda, inv_lambda);
  }

  void move_bracket(double lambda, int64_t total) {
    const bool moves_lo = total > units_;
    (moves_lo ? lo_ : hi_) = {lambda, total};
    std::vector<int64_t>& side = moves_lo ? counts_lo_ : counts_hi_;
    size_t kept = 0;
    for (int64_t q : active_) {
      side[q] = probe_counts_[q];
      if (counts_lo_[q] > counts_hi_[q]) active_[kept++] = q;
    }
    active_.resize(kept);
    previous_ = latest_;
    latest_ = {lambda, total};
    probes_ += 1;
  }

  double to_axis(double lambda) const { return positive_ ? std::log(lambda) : lambda; }
  double from_axis(double x) const { return positive_ ? std::exp(x) : x; }

  // Aim a little past the budget, away from the latest probe, so the next probe closes the bracket.
  double target() const {
    const int64_t miss = latest_.total - units_;
    const int64_t margin = std::max<int64_t>(8, std::abs(miss) / 4);
    return static_cast<double>(miss > 0 ? units_ - margin : units_ + margin);
  }

  double propose() const {
    if (probes_ == 0) return bisect();
    if (probes_ == 1 || previous_.total == latest_.total) {
      if (!positive_ || latest_.total == 0) return bisect();
      // One point: S ~ lambda^(-1/2) for curves like 1/n.
      const double ratio = static_cast<double>(latest_.total) / target();
      return latest_.lambda * ratio * ratio;
    }
    const double x0 = to_axis(previous_.lambda), x1 = to_axis(latest_.lambda);
    const double y0 = static_cast<double>(previous_.total), y1 = static_cast<double>(latest_.total);
    return from_axis(x1 + (target() - y1) * (x1 - x0) / (y1 - y0));
  }

  double bisect() const {
    const double lo = lo_.lambda, hi = hi_.lambda;
    if (positive_ && lo > 0) return std::sqrt(lo) * std::sqrt(hi);
    if (positive_) return hi * 0x1p-64;  // reaches 0 (then S(0) is probed) in a few steps
    return lo + 0.5 * (hi - lo);
  }

  void place_leftover_units(int64_t* extra) {
    const int64_t take = units_ - hi_.total;
    std::copy(counts_hi_.begin(), counts_hi_.end(), extra);
    const bool one_gain_value = (positive_ && hi_.lambda == 0) || std::nextafter(lo_.lambda, kInf) == hi_.lambda;
    if (one_gain_value)
      fill_level_by_level(take, extra);
    else
      select_largest_gains(take, extra);
  }

  // Every candidate gain equals hi: the tie rule alone decides. Water-fill without materialising
  // the candidates: every prompt is raised to the highest level T whose units all fit, then the
  // rest go one each at level T, lower prompt first.
  void fill_level_by_level(int64_t take, int64_t* extra) const {
    int64_t low = std::numeric_limits<int64_t>::max(), high = 0;
    for (int64_t q : active_) {
      low = std::min(low, counts_hi_[q]);
      high = std::max(high, counts_lo_[q]);
    }
    while (low < high) {  // largest T in [low, high] with units_below(T) <= take
      const int64_t mid = low + (high - low + 1) / 2;
      if (units_below(mid) <= take)
        low = mid;
      else
        high = mid - 1;
    }
    take -= units_below(low);
    for (int64_t q : active_) {
      const int64_t raised = std::clamp(low, counts_hi_[q], counts_lo_[q]);
      const bool one_more = take > 0 && raised == low && low < counts_lo_[q];
      extra[q] = raised + (one_more ? 1 : 0);
      take -= one_more ? 1 : 0;
    }
  }

  // Candidate units below level T: those with step k < T.
  int64_t units_below(int64_t level) const {
    int64_t total = 0;
    for (int64_t q : active_) total += std::clamp(level, counts_hi_[q], counts_lo_[q]) - counts_hi_[q];
    return total;
  }

  void select_largest_gains(int64_t take, int64_t* extra) const {
    std::vector<Candidate> candidates;
    candidates.reserve(static_cast<size_t>(lo_.total - hi_.total));
    for (int64_t q : active_)
      for (int64_t k = counts_hi_[q]; k < counts_lo_[q]; ++k) candidates.push_back({gains_.gain(q, k), q, k});
    const auto last = candidates.begin() + static_cast<std::ptrdiff_t>(take);
    std::nth_element(candidates.begin(), last, candidates.end(), takes_precedence);
    for (auto it = candidates.begin(); it != last; ++it) ++extra[it->prompt];
  }

  const Gains& gains_;
  int64_t num_prompts_, steps_, units_;
  bool positive_;
  Point lo_{}, hi_{}, latest_{}, previous_{};
  int probes_ = 0;
  std::vector<int64_t>& counts_lo_;
  std::vector<int64_t>& counts_hi_;
  std::vector<int64_t>& probe_counts_;
  std::vector<int64_t>& active_;  // prompts with counts_lo > counts_hi, in index order
};

// Square of the mean sqrt(w): the multiplier at which curves ~ 1/n give each prompt its share.
double typical_weight(const double* weights, int64_t num_prompts) {
  double sum = 0;
  for (int64_t q = 0; q < num_prompts; ++q) sum += std::sqrt(weights[q]);
  const double mean = sum / static_cast<double>(std::max<int64_t>(num_prompts, 1));
  return mean * mean;
}

double largest_first_gain(const double* weights, int64_t num_prompts, double unit_gain_at_min) {
  const double w_max = num_prompts == 0 ? 0.0 : *std::max_element(weights, weights + num_prompts);
  return w_max * unit_gain_at_min;
}

// Multiplier of rloo's continuous relaxation, n_q = clamp(1 + sqrt(w_q / lambda), L, U):
// Newton on s = lambda^(-1/2), where sum_q n_q(s) is piecewise linear and increasing.
// Its integer counts miss the budget by about sqrt(Q), so the search starts next to the answer.
double rloo_relaxed_multiplier(const double* weights, int64_t num_prompts, int64_t min_rollouts,
                               int64_t max_rollouts, int64_t budget) {
  const double L = static_cast<double>(min_rollouts), U = static_cast<double>(max_rollouts);
  const double target = static_cast<double>(budget);
  std::vector<double>& root = thread_workspace().roots;
  root.resize(static_cast<size_t>(num_prompts));
  double root_sum = 0;
  for (int64_t q = 0; q < num_prompts; ++q) root_sum += root[q] = std::sqrt(weights[q]);
  if (!(root_sum > 0)) return NAN;
  double s_lo = 0, s_hi = kInf;
  double s = std::max(target - static_cast<double>(num_prompts), 1.0) / root_sum;
  for (int iteration = 0; iteration < 50; ++iteration) {
    double total = 0, slope = 0;
    const double* r = root.data();
#pragma omp simd reduction(+ : total, slope)
    for (int64_t q = 0; q < num_prompts; ++q) {
      const double n = 1.0 + r[q] * s;
      total += std::min(std::max(n, L), U);
      slope += (n > L && n < U) ? r[q] : 0.0;
    }
    const double miss = total - target;
    // Integer rounding moves the count by about sqrt(Q)/2 anyway.
    if (std::abs(miss) < 0.5 + 0.05 * std::sqrt(static_cast<double>(num_prompts))) break;
    (miss > 0 ? s_hi : s_lo) = s;
    double next = slope > 0 ? s - miss / slope : NAN;
    if (!(next > s_lo && next < s_hi)) next = std::isfinite(s_hi) ? 0.5 * (s_lo + s_hi) : 2 * s;
    s = next;
  }
  return 1.0 / (s * s);
}

int64_t effective_max(const CostModel& model, const Bounds& b) {
  // No prompt can take more than every spare unit, so an estimator's unbounded range is cut there.
  if (model.curve != nullptr || model.table != nullptr) return b.max_rollouts;
  const int64_t spare = b.budget - b.num_prompts * b.min_rollouts;
  return std::min(b.max_rollouts, b.min_rollouts + spare);
}

void validate_model(const CostModel& model, const Bounds& b) {
  validate_bounds(b);
  if (model.weights != nullptr) validate_weights(model.weights, b.num_prompts);
  if (model.curve == nullptr && model.table == nullptr) validate_estimator_domain(model.estimator, b.min_rollouts);
}

void fill(int64_t* counts, int64_t n, int64_t value) { std::fill(counts, counts + n, value); }

}  // namespace

Estimator parse_estimator(const std::string& name) {
  if (name == "rloo") return Estimator::rloo;
  if (name == "drgrpo") return Estimator::drgrpo;
  if (name == "grpo") return Estimator::grpo;
  fail("unknown estimator '", name, "'; expected one of 'rloo', 'drgrpo', 'grpo'");
}

const char* estimator_name(Estimator estimator) {
  switch (estimator) {
    case Estimator::rloo: return "rloo";
    case Estimator::drgrpo: return "drgrpo";
    case Estimator::grpo: return "grpo";
  }
  return "?";
}

int64_t estimator_min_rollouts(Estimator estimator) { return estimator == Estimator::rloo ? 2 : 3; }

double estimator_variance(Estimator estimator, double n) {
  if (estimator == Estimator::rloo) return 1.0 / (n - 1.0);
  return (n - 1.0) / (n * n);  // grpo has no closed form; DESIGN.md uses drgrpo's curve
}

void allocate(const CostModel& model, const Bounds& b, int64_t* counts) {
  validate_model(model, b);
  const int64_t Q = b.num_prompts, L = b.min_rollouts;
  const int64_t steps = effective_max(model, b) - L;
  const int64_t units = b.budget - Q * L;
  if (units == 0 || units == Q * steps) {
    fill(counts, Q, units == 0 ? L : L + steps);
    return;
  }
  auto finish = [&] { for (int64_t q = 0; q < Q; ++q) counts[q] += L; };
  if (model.table != nullptr) {
    const CostTableGains gains(model.weights, model.table, Q, L, steps);
    const auto [g_min, g_max] = gains.range();
    ThresholdSearch<CostTableGains>(gains, Q, steps, units, false).solve(g_min - 1 - std::abs(g_min), g_max, NAN, counts);
  } else if (model.curve != nullptr) {
    const SharedCurveGains gains(model.weights, model.curve, L, steps);
    const double guess = typical_weight(model.weights, Q) * gains.unit_gain_at_mean(Q, b.budget, L);
    const double hi = largest_first_gain(model.weights, Q, gains.unit_gain(0));
    ThresholdSearch<SharedCurveGains>(gains, Q, steps, units, true).solve(-kInf, hi, guess, counts);
  } else {
    const EstimatorGains gains(model.weights, model.estimator, L, steps);
    const double guess = model.estimator == Estimator::rloo
                             ? rloo_relaxed_multiplier(model.weights, Q, L, L + steps, b.budget)
                             : typical_weight(model.weights, Q) * gains.unit_gain_at_mean(Q, b.budget);
    const double hi = largest_first_gain(model.weights, Q, gains.unit_gain(0));
    ThresholdSearch<EstimatorGains>(gains, Q, steps, units, true).solve(-kInf, hi, guess, counts);
  }
  finish();
}

namespace {

// -phi'(n), the continuous marginal gain per unit weight.
double marginal_variance(Estimator estimator, double n) {
  if (estimator == Estimator::rloo) return 1.0 / ((n - 1.0) * (n - 1.0));
  return (n - 2.0) / (n * n * n);
}

// argmin over n in [L, U] of w * phi(n) + lambda * n.
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
  int64_t zero_weight = 0;
  for (int64_t q = 0; q < num_prompts; ++q) zero_weight += weights[q] == 0;
  const double share = units / static_cast<double>(zero_weight);
  for (int64_t q = 0; q < num_prompts; ++q)
    if (weights[q] == 0) counts[q] += share;
}

}  // namespace

void allocate_relaxed(const CostModel& model, const Bounds& b, double* counts) {
  if (model.curve != nullptr || model.table != nullptr) {
    std::vector<int64_t> exact(static_cast<size_t>(b.num_prompts));
    allocate(model, b, exact.data());
    std::copy(exact.begin(), exact.end(), counts);
    return;
  }
  validate_model(model, b);
  const int64_t Q = b.num_prompts;
  const double lo_n = static_cast<double>(b.min_rollouts);
  const double hi_n = static_cast<double>(effective_max(model, b));
  const double budget = static_cast<double>(b.budget);
  auto evaluate = [&](double lambda, RelaxedPoint& point) {
    point.lambda = lambda;
    point.total = 0;
    point.counts.resize(static_cast<size_t>(Q));
    for (int64_t q = 0; q < Q; ++q)
      point.total += point.counts[q] = relaxed_count(model.estimator, model.weights[q], lambda, lo_n, hi_n);
  };
  // At the largest first gain every prompt sits at its minimum; shrink lambda until the
  // budget is reached, then bisect geometrically and interpolate the last bracket linearly
  // so the counts add up to the budget exactly.
  RelaxedPoint hi, lo, mid;
  evaluate(largest_first_gain(model.weights, Q, marginal_variance(model.estimator, lo_n)), hi);
  lo = hi;
  while (lo.total < budget && lo.lambda > std::numeric_limits<double>::min()) {
    hi = lo;
    evaluate(lo.lambda / 16, lo);
  }
  if (lo.total < budget) {
    absorb_in_zero_weights(model.weights, Q, budget - lo.total, lo.counts);
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
  const int64_t L = b.min_rollouts, U = b.max_rollouts;
  if (L < 1) fail("min_rollouts must be >= 1, got ", L);
  if (L > U) fail("min_rollouts (", L, ") exceeds max_rollouts (", U, ")");
  if (model.weights != nullptr) validate_weights(model.weights, b.num_prompts);
  const bool estimator = model.curve == nullptr && model.table == nullptr;
  if (estimator) validate_estimator_domain(model.estimator, L);
  const int64_t width = U - L + 1;
  double total = 0;
  for (int64_t q = 0; q < b.num_prompts; ++q) {
    const int64_t n = counts[q];
    if (n < L || n > U) fail("counts[", q, "] = ", n, " is outside [", L, ", ", U, "]");
    const double w = model.weights == nullptr ? 1.0 : model.weights[q];
    if (estimator) total += w * estimator_variance(model.estimator, static_cast<double>(n));
    else if (model.curve != nullptr) total += w * model.curve[n - L];
    else total += w * model.table[q * width + (n - L)];
  }
  return total;
}

}  // namespace vipfast
