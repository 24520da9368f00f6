// The gain models the threshold search runs on. gain(q, k) = cost_q(L + k) - cost_q(L + k + 1),
// non-increasing in k < steps(); count_all(lambda) writes n_q = L + #{k : gain(q, k) > lambda}.
#pragma once

#include <algorithm>
#include <limits>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "internal.hpp"

namespace vipfast::allocation {

// The gains on either side of each prompt's count, written by count_all: the search's next
// multiplier moves a prompt's count exactly when it passes one of them.
struct Boundary {
  double* first_left;  // (Q) gain(q, count), -inf when count = steps
  double* last_taken;  // (Q) gain(q, count - 1), +inf when count = 0
};

// The search's first multiplier, and how fast the count falls with it (NaN when unknown).
struct FirstProbe {
  double lambda;
  double slope_per_octave;  // d count / d log2(lambda), <= 0
};

// Unit gains u(k) read from a table valid for k in [-1, steps] (the ends are padding, so the
// neighbours of any count can be read without clamping).
class TabulatedUnits {
 public:
  explicit TabulatedUnits(const double* table) : table_(table) {}
  double operator()(int64_t k) const { return table_[k]; }

 private:
  const double* table_;
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
    return k < tabulated_ ? table_[k] : estimator_unit_gain(estimator_, static_cast<double>(min_ + k));
  }

 private:
  const double* table_;  // u(L + k) at [k]
  int64_t tabulated_;
  Estimator estimator_;
  int64_t min_;
};

// How prompt q's count is guessed: about alpha * sqrt(w_q / lambda) + beta units at multiplier
// lambda (floor), exact up to rounding for curves like 1/n.
struct CountGuess {
  double alpha, beta;
  int64_t positive_steps;  // unit gains are > 0 exactly for k < positive_steps
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
// itself; the rare rows whose rounding had to be projected away are kept apart.
class TableModel {
 public:
  static constexpr bool kNonNegative = false;

  // Checks every row (and the weights, if any) before anything else.
  TableModel(const double* weights, const double* table, int64_t num_prompts, int64_t min_rollouts, int64_t steps,
             Workspace& workspace);

  int64_t num_prompts() const { return num_prompts_; }
  int64_t steps() const { return steps_; }
  double gain(int64_t q, int64_t k) const {
    const double w = weights_ == nullptr ? 1.0 : weights_[q];
    if (any_projected_ && projected_row_[q] >= 0) return w * projected_[projected_row_[q] * steps_ + k];
    const double* row = table_ + q * (steps_ + 1);
    return w * (row[k] - row[k + 1]);
  }

  Total count_all(double lambda, int64_t min_rollouts, int64_t* counts, Boundary boundary) const;
  FirstProbe first_probe(int64_t units) const;

 private:
  const double* weights_;  // (Q) or null
  const double* table_;    // (Q, steps + 1)
  int64_t num_prompts_, steps_;
  bool any_projected_ = false;
  const int64_t* projected_row_ = nullptr;  // (Q)
  const double* projected_ = nullptr;
};

// Median gain at the mean count over a sample of prompts: a first multiplier for any model.
template <class Model>
double sampled_multiplier(const Model& model, int64_t units, std::vector<double>& samples) {
  const int64_t Q = model.num_prompts();
  const int64_t level = std::clamp<int64_t>(units / std::max<int64_t>(Q, 1), 0, model.steps() - 1);
  const int64_t stride = std::max<int64_t>(1, Q / 255);
  samples.clear();
  for (int64_t q = 0; q < Q; q += stride) samples.push_back(model.gain(q, level));
  const auto middle = samples.begin() + static_cast<std::ptrdiff_t>(samples.size() / 2);
  std::nth_element(samples.begin(), middle, samples.end());
  return *middle;
}

}  // namespace vipfast::allocation
