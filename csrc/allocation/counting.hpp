// Threshold counts #{k < m : gain(k) > lambda} of one prompt, for gains non-increasing in k.
#pragma once

#include <cstdint>

namespace vipfast::allocation {

// The count, known to lie in [lo, hi]: binary search.
template <class Gain>
int64_t count_within(const Gain& gain, double lambda, int64_t lo, int64_t hi) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (gain(mid) > lambda)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// The count when it exceeds `hint` (gain(hint) > lambda): doubling steps up, then bisection.
template <class Gain>
int64_t count_above_hint(const Gain& gain, double lambda, int64_t hint, int64_t steps) {
  int64_t lo = hint + 1, hi = steps;
  for (int64_t step = 1; step < steps - hint; step *= 2) {
    if (!(gain(hint + step) > lambda)) {
      hi = hint + step;
      break;
    }
    lo = hint + step + 1;
    if (step > (steps - hint) / 2) break;
  }
  return count_within(gain, lambda, lo, hi);
}

// The count when it is below `hint` (gain(hint - 1) <= lambda): doubling steps down, then bisection.
template <class Gain>
int64_t count_below_hint(const Gain& gain, double lambda, int64_t hint) {
  int64_t lo = 0, hi = hint - 1;
  for (int64_t step = 2; step <= hint; step *= 2) {
    if (gain(hint - step) > lambda) {
      lo = hint - step + 1;
      break;
    }
    hi = hint - step;
    if (step > hint / 2) break;
  }
  return count_within(gain, lambda, lo, hi);
}

// The count, searched outward from any hint in [0, steps]: O(log |count - hint|) gains.
template <class Gain>
int64_t count_from(const Gain& gain, double lambda, int64_t hint, int64_t steps) {
  if (hint < steps && gain(hint) > lambda) return count_above_hint(gain, lambda, hint, steps);
  if (hint > 0 && !(gain(hint - 1) > lambda)) return count_below_hint(gain, lambda, hint);
  return hint;
}

}  // namespace vipfast::allocation
