// Threshold search for the greedy optimum. The greedy takes the R = budget - Q*L largest gains
// (ties: lower step, then lower prompt, so equal gains are spread level by level); with
// S(lambda) = sum_q #{k : gain(q, k) > lambda}, every unit with gain > lambda is taken once
// S(lambda) <= R. The search
//   1. counts every prompt at the model's first multiplier (one pass, writing the counts),
//   2. steps the multiplier outward until S crosses R; each step re-counts every prompt from its
//      current count, one comparison for the many that do not move, and keeps those that do,
//   3. narrows the bracket on those prompts alone (secant steps, bisection of the doubles' order
//      every other step, so at most ~130 steps in any case),
//   4. places the last units among the bracket's candidates: selection, or a water-fill when
//      they all share one gain value.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "counting.hpp"
#include "models.hpp"

namespace vipfast::allocation {

template <class Model>
class ThresholdSearch {
 public:
  ThresholdSearch(Model& model, int64_t min_rollouts, int64_t units, int64_t* counts, Workspace& workspace)
      : model_(model), min_(min_rollouts), units_(units), counts_(counts), steps_(model.steps()),
        entries_(workspace.entries), candidates_(workspace.candidates) {
    const auto Q = static_cast<size_t>(model.num_prompts()), blocks = Q / Boundary::kBlock + 1;
    workspace.first_left.resize(Q);
    workspace.last_taken.resize(Q);
    workspace.most_left.resize(blocks);
    workspace.least_taken.resize(blocks);
    boundary_ = {workspace.first_left.data(), workspace.last_taken.data(), workspace.most_left.data(),
                 workspace.least_taken.data()};
  }

  void run() {
    const FirstProbe first = model_.first_probe(units_);
    run_from(std::isnan(first.lambda) ? 0.0 : first.lambda, first.slope_per_key);
  }

  // Counts every prompt at `lambda` (the one pass over all the input), then searches from there.
  void run_from(double lambda, double slope_per_key = NAN) {
    const Point start{lambda, model_.count_all(lambda, min_, counts_, boundary_)};
    if (start.total == units_ || !find_bracket(start, slope_per_key)) return;
    if (!narrow_bracket()) return;
    place_last_units();
  }

 private:
  struct Point {
    double lambda;
    Total total;  // S(lambda)
  };

  static constexpr int64_t kKeyOfPlusInfinity = 0x7FF0000000000000;
  static constexpr int64_t kKeyOfMinusInfinity = -kKeyOfPlusInfinity - 1;

  auto prompt_gain(int64_t q) const {
    return [this, q](int64_t k) { return model_.gain(q, k); };
  }
  int64_t current(int64_t q) const { return counts_[q] - min_; }
  void move_to(int64_t q, int64_t count) {
    counts_[q] = min_ + count;
    boundary_.set(q, count < steps_ ? model_.gain(q, count) : -INFINITY, count > 0 ? model_.gain(q, count - 1) : INFINITY);
  }

  // Step 2. Returns false when a step lands exactly on R (the counts are then final).
  bool find_bracket(Point near, double slope_per_key) {
    const bool need_more = near.total < units_;
    double distance = 0;
    for (;;) {
      const double lambda = outward(near, need_more, slope_per_key, distance);
      Total total = near.total;
      entries_.clear();
      const auto move = [&](int64_t q) {
        const int64_t was = current(q);
        // A count at the end of its range has no unit to gain or give up, whatever the multiplier (one at
        // +-inf passes even the sentinel gains there).
        if (need_more ? was >= steps_ : was <= 0) return;
        // Most prompts move by one unit: check that before searching further.
        int64_t now;
        if (need_more)
          now = was + 1 == steps_ || !(model_.gain(q, was + 1) > lambda) ? was + 1
                                                                          : count_above_hint(prompt_gain(q), lambda, was, steps_);
        else
          now = was == 1 || model_.gain(q, was - 2) > lambda ? was - 1 : count_below_hint(prompt_gain(q), lambda, was);
        total += now - was;
        entries_.push_back(need_more ? Entry{q, was, now, now} : Entry{q, now, was, now});
      };
      // A prompt moves when the multiplier passes its boundary gain: below it (more units) or up to it.
      for_each_passed(lambda, need_more, move);
      const Point far{lambda, total};
      if (need_more ? total < units_ : total > units_) {
        const double key_step = static_cast<double>(order_key(far.lambda)) - static_cast<double>(order_key(near.lambda));
        slope_per_key = static_cast<double>(far.total - near.total) / key_step;
        distance = std::abs(key_step);
        for (const Entry& e : entries_) move_to(e.prompt, e.probe);
        near = far;
        continue;
      }
      if (total == units_) {
        for (const Entry& e : entries_) counts_[e.prompt] = min_ + e.probe;
        return false;
      }
      (need_more ? hi_ : lo_) = near;
      (need_more ? lo_ : hi_) = far;
      return true;
    }
  }

  // Calls visit(q) for every prompt whose boundary gain the multiplier passes: first_left > lambda
  // (`above`) or last_taken <= lambda. Few prompts move; the blocks' bounds skip the others.
  template <class Visit>
  void for_each_passed(double lambda, bool above, Visit visit) const {
    const int64_t Q = model_.num_prompts(), block = Boundary::kBlock;
    const double* gains = above ? boundary_.first_left : boundary_.last_taken;
    const double* bounds = above ? boundary_.most_left : boundary_.least_taken;
    for (int64_t start = 0; start < Q; start += block) {
      if ((bounds[start / block] > lambda) != above) continue;
      for (int64_t q = start, end = std::min(start + block, Q); q < end; ++q)
        if ((gains[q] > lambda) == above) visit(q);
    }
  }

  // Next multiplier outward from `near`, aimed a little past R; at least twice as far as the last miss.
  double outward(const Point& near, bool need_more, double slope_per_key, double distance) const {
    const int64_t key = order_key(near.lambda);
    const double shortfall = std::abs(static_cast<double>(units_ - near.total));
    const double aim = 2 * shortfall + 16;  // the slope is an estimate: overshoot rather than fall short
    double step = slope_per_key < 0 ? aim / -slope_per_key : 0x1p49;
    if (!(step >= 2 * distance)) step = 2 * distance;
    step = std::max(step, 1.0);
    const double far_key = static_cast<double>(key) + (need_more ? -step : step);
    if (Model::kNonNegative && need_more && !(far_key > 0)) return near.lambda > 0 ? 0.0 : -INFINITY;
    if (far_key >= static_cast<double>(kKeyOfPlusInfinity)) return INFINITY;
    if (far_key <= static_cast<double>(kKeyOfMinusInfinity)) return -INFINITY;
    return from_order_key(static_cast<int64_t>(far_key));
  }

  // Step 3 on the entries. Returns false when a probe lands exactly on R.
  bool narrow_bracket() {
    int same_side_streak = 0;
    bool last_moved_lo = false;
    // Placing a candidate unit by selection costs more than re-counting an entry, so probes go on
    // until the candidates are about one per entry.
    for (int probe = 0; lo_.total - hi_.total > 64 + 2 * static_cast<Total>(entries_.size()) && !one_gain_value();
         ++probe) {
      if (probe > 400) throw std::runtime_error("allocation: the threshold search did not converge");
      const double lambda = inside(same_side_streak >= 2, last_moved_lo);
      Total total = hi_.total;
      for (Entry& e : entries_) {
        e.probe = count_between(e, lambda);
        total += e.probe - e.fewer;
      }
      if (total == units_) {
        for (const Entry& e : entries_) counts_[e.prompt] = min_ + e.probe;
        return false;
      }
      const bool moves_lo = total > units_;
      (moves_lo ? lo_ : hi_) = {lambda, total};
      same_side_streak = moves_lo == last_moved_lo ? same_side_streak + 1 : 1;
      last_moved_lo = moves_lo;
      size_t kept = 0;
      for (Entry& e : entries_) {
        (moves_lo ? e.more : e.fewer) = e.probe;
        if (e.fewer < e.more)
          entries_[kept++] = e;
        else
          counts_[e.prompt] = min_ + e.fewer;
      }
      entries_.resize(kept);
    }
    return true;
  }

  int64_t count_between(const Entry& e, double lambda) const {
    if (model_.gain(e.prompt, e.more - 1) > lambda) return e.more;
    if (!(model_.gain(e.prompt, e.fewer) > lambda)) return e.fewer;
    return count_within(prompt_gain(e.prompt), lambda, e.fewer + 1, e.more - 1);
  }

  // Every candidate gain lies in (lo, hi]; here that interval holds one value.
  bool one_gain_value() const {
    if (Model::kNonNegative && hi_.lambda == 0) return true;  // gains >= 0 in (lo, 0]: all zero
    return static_cast<uint64_t>(order_key(hi_.lambda)) - static_cast<uint64_t>(order_key(lo_.lambda)) <= 1;
  }

  // A probe strictly inside the bracket: a secant step on the doubles' order aimed past R, away
  // from the side that moved last, or bisection when one side has moved twice in a row.
  double inside(bool bisect, bool last_moved_lo) const {
    if (Model::kNonNegative && lo_.lambda < 0) return 0.0;  // the only negative probe is -inf: try zero
    const int64_t lo = order_key(lo_.lambda), hi = order_key(hi_.lambda);
    const int64_t middle = lo + static_cast<int64_t>((static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo)) / 2);
    if (bisect) return from_order_key(middle);
    const double spread = static_cast<double>(lo_.total - hi_.total);
    const Total last = last_moved_lo ? lo_.total : hi_.total;
    const double margin = std::max(4.0, std::abs(static_cast<double>(last - units_)) / 4);
    const double target = static_cast<double>(units_) + (last_moved_lo ? -margin : margin);
    const double fraction = (static_cast<double>(lo_.total) - target) / spread;
    const double key = static_cast<double>(lo) + fraction * (static_cast<double>(hi) - static_cast<double>(lo));
    if (!(key > static_cast<double>(lo) && key < static_cast<double>(hi))) return from_order_key(middle);
    const int64_t rounded = std::clamp(static_cast<int64_t>(key), lo + 1, hi - 1);
    return from_order_key(rounded);
  }

  // Step 4.
  void place_last_units() {
    const Total take = units_ - hi_.total;
    if (one_gain_value())
      fill_level_by_level(take);
    else
      select_largest_gains(static_cast<int64_t>(take));
  }

  // Every candidate gain is equal, so the tie rule alone decides: every prompt is raised to the
  // highest level T whose units all fit, then the rest go one each at level T, lower prompt first.
  void fill_level_by_level(Total take) {
    int64_t low = std::numeric_limits<int64_t>::max(), high = 0;
    for (const Entry& e : entries_) {
      low = std::min(low, e.fewer);
      high = std::max(high, e.more);
    }
    while (low < high) {
      const int64_t middle = low + (high - low + 1) / 2;
      if (units_below(middle) <= take)
        low = middle;
      else
        high = middle - 1;
    }
    take -= units_below(low);
    for (const Entry& e : entries_) {
      const int64_t raised = std::clamp(low, e.fewer, e.more);
      const bool one_more = take > 0 && raised == low && low < e.more;
      counts_[e.prompt] = min_ + raised + (one_more ? 1 : 0);
      take -= one_more ? 1 : 0;
    }
  }

  Total units_below(int64_t level) const {
    Total total = 0;
    for (const Entry& e : entries_) total += std::clamp(level, e.fewer, e.more) - e.fewer;
    return total;
  }

  static bool takes_precedence(const Candidate& a, const Candidate& b) {
    if (a.gain != b.gain) return a.gain > b.gain;
    if (a.step != b.step) return a.step < b.step;
    return a.entry < b.entry;  // entries are in prompt order
  }

  void select_largest_gains(int64_t take) {
    std::vector<Candidate>& candidates = candidates_;
    candidates.clear();
    for (size_t i = 0; i < entries_.size(); ++i)
      for (int64_t k = entries_[i].fewer; k < entries_[i].more; ++k)
        candidates.push_back({model_.gain(entries_[i].prompt, k), static_cast<int64_t>(i), k});
    const auto last = candidates.begin() + take;
    std::nth_element(candidates.begin(), last, candidates.end(), takes_precedence);
    for (Entry& e : entries_) e.probe = e.fewer;
    for (auto it = candidates.begin(); it != last; ++it) ++entries_[static_cast<size_t>(it->entry)].probe;
    for (const Entry& e : entries_) counts_[e.prompt] = min_ + e.probe;
  }

  Model& model_;
  int64_t min_, units_;
  int64_t* counts_;
  int64_t steps_;
  Point lo_{}, hi_{};  // S(lo) > R > S(hi), lo < hi
  std::vector<Entry>& entries_;  // in prompt order
  std::vector<Candidate>& candidates_;
  Boundary boundary_{};
};

}  // namespace vipfast::allocation
