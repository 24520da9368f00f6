// The gain models the threshold search runs on. gain(q, k) = cost_q(L + k) - cost_q(L + k + 1),
// non-increasing in k < steps(); count_all(lambda) writes n_q = L + #{k : gain(q, k) > lambda}.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstddef>
#include <functional>
#include <cstdint>
#include <vector>

#include "internal.hpp"

namespace vipfast::allocation {

// The gains on either side of each prompt's count, written by count_all: the search's next
// multiplier moves a prompt's count exactly when it passes one of them. Bounds per block of 16
// prompts let the search skip the blocks where nothing moves.
struct Boundary {
  static constexpr int64_t kBlock = 16;
  double* first_left;   // (Q) gain(q, count), -inf when count = steps
  double* last_taken;   // (Q) gain(q, count - 1), +inf when count = 0
  double* most_left;    // (Q / 16 + 1) at least every first_left of the block
  double* least_taken;  // (Q / 16 + 1) at most every last_taken of the block

  void clear_blocks(int64_t num_prompts) const {
    std::fill(most_left, most_left + num_prompts / kBlock + 1, -std::numeric_limits<double>::infinity());
    std::fill(least_taken, least_taken + num_prompts / kBlock + 1, std::numeric_limits<double>::infinity());
  }
  void set(int64_t q, double left, double taken) const {
    first_left[q] = left;
    last_taken[q] = taken;
    most_left[q / kBlock] = std::max(most_left[q / kBlock], left);
    least_taken[q / kBlock] = std::min(least_taken[q / kBlock], taken);
  }
};

// The search's first multiplier, and how fast the count falls with it (NaN when unknown).
struct FirstProbe {
  double lambda;
  double slope_per_key;  // d count / d order_key(lambda), <= 0
};

// Unit gains u(k) read from a table valid for k in [-1, steps] (the ends are padding, so the
// neighbours of any count can be read without clamping).
class TabulatedUnits {
 public:
  explicit TabulatedUnits(const double* table, int64_t steps) : table_(table), steps_(steps) {}
  double operator()(int64_t k) const { return table_[k]; }
  const double* data() const { return table_; }
  int64_t readable() const { return steps_; }  // the table holds k in [-1, readable()]

 private:
  const double* table_;
  int64_t steps_;
};

// An estimator's unit gains for ranges too long to tabulate: the table, then the formula.
class EstimatorUnits {
 public:
  EstimatorUnits(Estimator estimator, int64_t min_rollouts)
      : table_(estimator_unit_gain_table(estimator) + (min_rollouts < kTabulatedRollouts ? min_rollouts : 0)),
        tabulated_(min_rollouts < kTabulatedRollouts ? kTabulatedRollouts - min_rollouts : 0),
        estimator_(estimator),
        min_(min_rollouts) {}
  double operator()(int64_t k) const {
    return tabulated_ > 0 && k < tabulated_ ? table_[k] : estimator_unit_gain(estimator_, static_cast<double>(min_ + k));
  }
  const double* data() const { return table_; }
  int64_t readable() const { return tabulated_ - 1; }  // table_ holds k in [-1, readable()]; -1: none

 private:
  const double* table_;  // u(L + k) at [k], for -1 <= k < tabulated_ (n = L - 1 >= 1 is still in the table)
  int64_t tabulated_;
  Estimator estimator_;
  int64_t min_;
};

// How prompt q's count is guessed: floor(alpha x + beta + gamma / (x + 1)) units at multiplier
// lambda, x = sqrt(w_q / lambda); alpha = 0 when there is no guess.
struct CountGuess {
  double alpha, beta, gamma;
  int64_t positive_steps;  // unit gains are > 0 exactly for k < positive_steps
  int64_t mean_count;      // spare units per prompt
};

// cost_q(n) = w_q * phi(n) with phi shared (an estimator's curve or a user's). The guess, fixed
// up against the exact gains, makes each count O(1); its sum gives the first multiplier.
template <class Units>
class SharedModel {
 public:
  static constexpr bool kNonNegative = true;

  SharedModel(const double* weights, const double* roots, double root_sum, int64_t num_prompts, Units units,
              int64_t steps, CountGuess guess)
      : weights_(weights), roots_(roots), root_sum_(root_sum), num_prompts_(num_prompts), units_(units),
        steps_(steps), guess_(guess) {}

  int64_t num_prompts() const { return num_prompts_; }
  int64_t steps() const { return steps_; }
  double gain(int64_t q, int64_t k) const { return weights_[q] * units_(k); }

  Total count_all(double lambda, int64_t min_rollouts, int64_t* counts, Boundary boundary) const;
  FirstProbe first_probe(int64_t units) const;

 private:
  template <class Sum>
  Sum count_all_into(double lambda, int64_t min_rollouts, int64_t* counts, Boundary boundary) const;
  double guess_bias(double lambda, double s, double offset, double top) const;
  static constexpr int64_t kBiasSampleMinimum = 2048;  // smaller batches: the sample's noise is the bias' size

  const double* weights_;  // (Q)
  const double* roots_;    // (Q) sqrt(weights)
  double root_sum_;
  int64_t num_prompts_;
  Units units_;
  int64_t steps_;
  CountGuess guess_;
};

extern template class SharedModel<TabulatedUnits>;
extern template class SharedModel<EstimatorUnits>;

// cost_q(n) = w_q * table[q, n - L]: gains are the rows' differences, read from the table
// itself; the rare rows whose rounding had to be projected away are kept apart. The rows are
// checked in the one pass that reads them all, count_all, which must come before any search and
// keeps the gains around each count in a compact window: the search stays near those counts, and
// reading them there rather than from rows scattered over a large table saves a cache miss each.
class TableModel {
 public:
  static constexpr bool kNonNegative = false;

  // Checks the weights, if any.
  TableModel(const double* weights, const double* table, int64_t num_prompts, int64_t min_rollouts, int64_t steps,
             Workspace& workspace);

  int64_t num_prompts() const { return num_prompts_; }
  int64_t steps() const { return steps_; }
  double gain(int64_t q, int64_t k) const {
    if (window_ != nullptr) {
      const auto slot = static_cast<uint64_t>(k - window_start_[q]);
      if (slot < kWindow) return window_[q * kWindow + static_cast<int64_t>(slot)];
    }
    return row_gain(q, k);
  }

  // Checks every row (a ValueError for the first bad one) while counting it.
  Total count_all(double lambda, int64_t min_rollouts, int64_t* counts, Boundary boundary);
  FirstProbe first_probe(int64_t units) const;

 private:
  static constexpr int64_t kWindow = 8;

  double row_gain(int64_t q, int64_t k) const {
    const double w = weights_ == nullptr ? 1.0 : weights_[q];
    if (any_projected_ && projected_row_[q] >= 0) return w * projected_[projected_row_[q] * steps_ + k];
    const double* row = table_ + q * (steps_ + 1);
    return w * (row[k] - row[k + 1]);
  }
  int64_t project_row(int64_t q, double lambda);  // its count at lambda

  const double* weights_;  // (Q) or null
  const double* table_;    // (Q, steps + 1)
  int64_t num_prompts_, min_, steps_;
  Workspace& workspace_;
  bool any_projected_ = false;
  const int64_t* projected_row_ = nullptr;  // (Q)
  const double* projected_ = nullptr;
  const double* window_ = nullptr;         // (Q, kWindow) gains from window_start_ on
  const int64_t* window_start_ = nullptr;  // (Q)
};

// A first multiplier for any model from a sample of prompts: the gain ranked, among the sampled
// units, where the budget's last unit would rank, and the count's slope from the ranks around it.
template <class Model>
FirstProbe sampled_probe(const Model& model, int64_t units, std::vector<double>& samples) {
  const int64_t Q = model.num_prompts(), mean = units / Q;
  // Levels far above the mean count hold gains too small to matter for the rank.
  const int64_t levels = std::min(model.steps(), std::max<int64_t>(64, 4 * mean + 8));
  // A sixteenth of the units, at most 4096: a few percent of the first pass's work.
  const int64_t sampled = std::clamp<int64_t>(Q / 16 * levels, 256, 4096);
  const int64_t rows = std::clamp<int64_t>(sampled / levels, 1, Q), stride = Q / rows;
  samples.clear();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < levels; ++k) {
      const double gain = model.gain(i * stride, k);
      if (std::isfinite(gain)) samples.push_back(gain);  // rows are checked later, in the first pass
    }
  if (samples.empty()) return {0.0, std::numeric_limits<double>::quiet_NaN()};
  const double per_prompt = static_cast<double>(rows) / static_cast<double>(Q);
  const int64_t last = static_cast<int64_t>(samples.size()) - 1;
  const auto ranked = [&](int64_t rank) {  // the rank-th largest sampled gain
    const auto at = samples.begin() + std::clamp<int64_t>(rank, 0, last);
    std::nth_element(samples.begin(), at, samples.end(), std::greater<double>());
    return *at;
  };
  const int64_t rank = static_cast<int64_t>(static_cast<double>(units) * per_prompt);
  const int64_t width = std::max<int64_t>(4, last / 32);
  const double lambda = ranked(rank);
  const double keys = static_cast<double>(order_key(ranked(rank - width))) - static_cast<double>(order_key(ranked(rank + width)));
  const double slope = keys > 0 ? -2.0 * static_cast<double>(width) / per_prompt / keys : std::numeric_limits<double>::quiet_NaN();
  return {lambda, slope};
}

}  // namespace vipfast::allocation
