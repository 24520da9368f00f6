// Ragged group advantages on the CPU (see vipfast/advantages.hpp).
#include "vipfast/advantages.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <type_traits>

#include "vipfast/fail.hpp"

namespace vipfast {
namespace {

// Rollouts ahead whose group state is prefetched: groups are read in random order, and the
// loads of a few rollouts in flight at once hide most of the cache misses.
constexpr int64_t kPrefetchAhead = 16;

inline void prefetch(const void* address) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(address);
#else
  (void)address;
#endif
}

// Tables past a core's L2 cache: their random reads are worth prefetching.
template <class Entry>
bool beyond_cache(const std::vector<Entry>& table) {
  return table.size() * sizeof(Entry) > (size_t{512} << 10);
}

// Prefetches the table entry of rollout i + kPrefetchAhead's group, when that group is in range.
template <class Ids, class Entry>
inline void prefetch_group(const Ids& ids, int64_t i, int64_t n, const std::vector<Entry>& table) {
  if (i + kPrefetchAhead >= n) return;
  const int64_t ahead = ids.raw(i + kPrefetchAhead);
  if (ahead >= 0 && ahead < static_cast<int64_t>(table.size())) prefetch(&table[static_cast<size_t>(ahead)]);
}

// Sums over one group of d = x * unit - shift, where shift is the group's first x * unit and
// unit a power of two that is 1 unless the squares of a float64 group overflow or underflow.
// Squares (grpo) adds the sum of squares and abs_sum, which is 0 exactly when every d is: it
// tells an all-equal group from a spread whose squares underflow (float32 rewards cannot have
// one: d^2 >= 2^-298). Without squares the state is smaller, which the random reads of
// interleaved groups feel.
template <bool Squares>
struct Moments;

template <>
struct Moments<true> {
  double shift = 0.0;
  double sum = 0.0;
  double sumsq = 0.0;
  double abs_sum = 0.0;
  int64_t count = 0;
};

template <>
struct Moments<false> {
  static constexpr double sumsq = 0.0;
  static constexpr double abs_sum = 0.0;
  double shift = 0.0;
  double sum = 0.0;
  int64_t count = 0;
};

// Below this, squares of the spread have lost bits to underflow (d^2 < 2^-1022 is subnormal).
constexpr double kSmallestTrustedSquares = 0x1p-900;

// A = (x * unit - center) * scale for every rollout of a group. An all-equal group has
// center == x * unit exactly, so its A is exactly 0.
struct Affine {
  double center = 0.0;
  double scale = 0.0;

  float operator()(double x_times_unit) const { return static_cast<float>((x_times_unit - center) * scale); }
};

template <bool Squares>
Affine affine_of(const Moments<Squares>& m, const AdvantageOptions& options, double unit) {
  if (m.count < 2) return Affine{m.shift, 0.0};
  const double n = static_cast<double>(m.count);
  const double offset = m.sum / n;
  double scale = 0.0;
  switch (options.estimator) {
    case Estimator::grpo: {
      // The shift is one of the rewards, so sumsq - sum * offset cancels by at most a factor of n.
      const double variance = std::max(m.sumsq - m.sum * offset, 0.0) / (n - 1.0);
      const double denominator = std::sqrt(variance) + options.eps * unit;
      scale = denominator > 0.0 ? 1.0 / denominator : 0.0;
      break;
    }
    case Estimator::drgrpo:
      scale = 1.0 / unit;
      break;
    case Estimator::rloo:
      scale = n / (n - 1.0) / unit;
      break;
  }
  return Affine{m.shift + offset, scale};
}

template <bool Squares>
bool finite_sums(const Moments<Squares>& m) {
  return std::isfinite(m.sum) && std::isfinite(m.sumsq);
}

// Sums to take again with the rewards scaled: overflowed (or NaN), or squares underflowing.
template <bool Squares>
bool needs_rescale(const Moments<Squares>& m) {
  return !finite_sums(m) || (m.abs_sum > 0.0 && m.sumsq < kSmallestTrustedSquares);
}

// The power of two that brings the largest |x| of a group into [1, 2): its squares then neither
// overflow nor underflow. Subnormal groups stop at 2^1000, which keeps the unit finite.
double unit_for(double max_abs) {
  return max_abs > 0.0 ? std::ldexp(1.0, -std::max(std::ilogb(max_abs), -1000)) : 1.0;
}

void check_options(const AdvantageOptions& options) {
  if (!(std::isfinite(options.eps) && options.eps >= 0.0)) fail("eps must be finite and >= 0, got ", options.eps);
}

template <bool Squares, class T>
Moments<Squares> segment_moments(const T* x, int64_t n, double unit) {
  Moments<Squares> m;
  m.count = n;
  if (n == 0) return m;
  const double shift = static_cast<double>(x[0]) * unit;
  double sum = 0.0, sumsq = 0.0, abs_sum = 0.0;
#pragma omp simd reduction(+ : sum, sumsq, abs_sum)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) * unit - shift;
    sum += d;
    if constexpr (Squares) {
      sumsq += d * d;
      if constexpr (std::is_same_v<T, double>) abs_sum += std::fabs(d);
    }
  }
  m.shift = shift;
  m.sum = sum;
  if constexpr (Squares) {
    m.sumsq = sumsq;
    m.abs_sum = abs_sum;
  }
  return m;
}

template <class T>
[[noreturn]] void fail_not_finite(const T* rewards, int64_t i) {
  fail("rewards must be finite: rewards[", i, "] = ", static_cast<double>(rewards[i]));
}

// One group rewards[begin, begin + n): sums, then A.
template <bool Squares, class T>
void segment(const T* rewards, int64_t begin, int64_t n, const AdvantageOptions& options, float* out) {
  const T* x = rewards + begin;
  double unit = 1.0;
  Moments<Squares> m = segment_moments<Squares>(x, n, unit);
  if (needs_rescale(m)) {
    double max_abs = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(static_cast<double>(x[i]))) {
        if (options.require_finite) fail_not_finite(rewards, begin + i);
        max_abs = std::numeric_limits<double>::quiet_NaN();  // NaN in, NaN out
        break;
      }
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(x[i])));
    }
    if (std::isfinite(max_abs)) {
      unit = unit_for(max_abs);
      m = segment_moments<Squares>(x, n, unit);
    }
  }
  const Affine map = affine_of(m, options, unit);
  for (int64_t i = 0; i < n; ++i) out[begin + i] = map(static_cast<double>(x[i]) * unit);
}

// Size of group g, after check_group_bounds.
int64_t size_of(const GroupBounds& bounds, int64_t g) {
  return bounds.are_offsets ? bounds.values[g + 1] - bounds.values[g] : bounds.values[g];
}

int64_t num_groups(const GroupBounds& bounds) { return bounds.are_offsets ? bounds.count - 1 : bounds.count; }

void check_sizes(const int64_t* sizes, int64_t count, int64_t num_rollouts, bool allow_empty_groups) {
  int64_t total = 0;
  bool overflow = false;
  for (int64_t g = 0; g < count; ++g) {
    const int64_t size = sizes[g];
    if (size < 0) fail("group_sizes[", g, "] = ", size, " is negative; every group needs at least one rollout");
    if (size == 0 && !allow_empty_groups)
      fail("group_sizes[", g, "] = 0 is an empty group (drop it, or pass check=False); every group needs at "
           "least one rollout");
    overflow = overflow || size > std::numeric_limits<int64_t>::max() - total;
    if (!overflow) total += size;
  }
  if (overflow) fail("group_sizes add up to more than 2^63 - 1 but rewards has ", num_rollouts, " entries");
  if (total != num_rollouts) fail("group_sizes add up to ", total, " but rewards has ", num_rollouts, " entries");
}

void check_offsets(const int64_t* offsets, int64_t count, int64_t num_rollouts, bool allow_empty_groups) {
  if (count < 1) fail("offsets must have G + 1 >= 1 entries (offsets = [0] for an empty batch)");
  if (offsets[0] != 0) fail("offsets must start at 0, got offsets[0] = ", offsets[0]);
  for (int64_t g = 1; g < count; ++g) {
    if (offsets[g] > offsets[g - 1] || (offsets[g] == offsets[g - 1] && allow_empty_groups)) continue;
    if (allow_empty_groups)
      fail("offsets must not decrease: offsets[", g, "] = ", offsets[g], " after offsets[", g - 1,
           "] = ", offsets[g - 1]);
    fail("offsets must be strictly increasing (every group needs at least one rollout): offsets[", g, "] = ",
         offsets[g], " after offsets[", g - 1, "] = ", offsets[g - 1]);
  }
  if (offsets[count - 1] != num_rollouts)
    fail("offsets end at ", offsets[count - 1], " but rewards has ", num_rollouts, " entries");
}

void check_group_bounds(const GroupBounds& bounds, int64_t num_rollouts, bool allow_empty_groups) {
  if (num_rollouts < 0) fail("the number of rollouts must be >= 0, got ", num_rollouts);
  if (bounds.count < 0) fail("the number of group bounds must be >= 0, got ", bounds.count);
  if (bounds.are_offsets)
    check_offsets(bounds.values, bounds.count, num_rollouts, allow_empty_groups);
  else
    check_sizes(bounds.values, bounds.count, num_rollouts, allow_empty_groups);
}

// Each rollout's group from an id array, checked at every read: the array may change while the
// GIL is released.
template <class Id>
struct GroupIds {
  const Id* ids;
  int64_t num_groups;

  int64_t raw(int64_t i) const { return static_cast<int64_t>(ids[i]); }
  size_t operator()(int64_t i) const {
    const int64_t id = raw(i);
    if (id < 0 || id >= num_groups) fail("group_of[", i, "] = ", id, " is outside [0, ", num_groups, ")");
    return static_cast<size_t>(id);
  }
};

// Each rollout's group as its key minus the smallest key, for keys within a short span: no
// renumbering pass, no id array.
struct KeySlots {
  const int64_t* keys;
  int64_t lo;
  int64_t num_groups;  // the span of the keys, plus one

  int64_t raw(int64_t i) const {
    const uint64_t slot = static_cast<uint64_t>(keys[i]) - static_cast<uint64_t>(lo);
    return slot < static_cast<uint64_t>(num_groups) ? static_cast<int64_t>(slot) : -1;
  }
  size_t operator()(int64_t i) const {
    const int64_t slot = raw(i);
    if (slot < 0) fail("keys changed during the call");
    return static_cast<size_t>(slot);
  }
};

struct KeyRange {
  int64_t lo;
  uint64_t span;  // hi - lo, exact in uint64
};

KeyRange key_range(const int64_t* keys, int64_t n) {
  int64_t lo = keys[0], hi = keys[0];
#pragma omp simd reduction(min : lo) reduction(max : hi)
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, keys[i]);
    hi = std::max(hi, keys[i]);
  }
  return KeyRange{lo, static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo)};
}

// Sums of every group, or (Rescaled) only of the groups with a unit, scaled by it.
template <bool Squares, bool Rescaled, class T, class Ids>
void accumulate(const T* x, int64_t n, const Ids& ids, std::vector<Moments<Squares>>& groups,
                const std::vector<double>& units) {
  const bool far = beyond_cache(groups);
  for (int64_t i = 0; i < n; ++i) {
    if (far) prefetch_group(ids, i, n, groups);
    const size_t g = ids(i);
    double value = static_cast<double>(x[i]);
    if constexpr (Rescaled) {
      if (units[g] == 0.0) continue;
      value *= units[g];
    }
    Moments<Squares>& m = groups[g];
    if (m.count++ == 0) m.shift = value;
    const double d = value - m.shift;
    m.sum += d;
    if constexpr (Squares) {
      m.sumsq += d * d;
      if constexpr (std::is_same_v<T, double>) m.abs_sum += std::fabs(d);
    }
  }
}

// Groups whose sums overflowed or whose squares underflowed, their rewards finite: sums again,
// scaled. Returns each group's unit (0 for the groups kept as they are), or nothing when none is.
template <bool Squares, class T, class Ids>
std::vector<double> rescale(const T* x, int64_t n, const Ids& ids, const AdvantageOptions& options,
                            std::vector<Moments<Squares>>& groups) {
  if (std::none_of(groups.begin(), groups.end(), needs_rescale<Squares>)) return {};
  std::vector<double> max_abs(groups.size(), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const size_t g = ids(i);
    const double value = static_cast<double>(x[i]);
    if (!std::isfinite(value)) {
      if (options.require_finite) fail_not_finite(x, i);
      max_abs[g] = std::numeric_limits<double>::quiet_NaN();  // NaN in, NaN out
    } else if (!std::isnan(max_abs[g])) {
      max_abs[g] = std::max(max_abs[g], std::fabs(value));
    }
  }
  std::vector<double> units(groups.size(), 0.0);
  for (size_t g = 0; g < groups.size(); ++g) {
    if (!needs_rescale(groups[g]) || std::isnan(max_abs[g])) continue;
    units[g] = unit_for(max_abs[g]);
    groups[g] = Moments<Squares>{};
  }
  accumulate<Squares, true>(x, n, ids, groups, units);
  return units;
}

template <bool Squares, class T, class Ids>
void indexed(const T* x, int64_t n, const Ids& ids, const AdvantageOptions& options, float* out) {
  std::vector<Moments<Squares>> groups(static_cast<size_t>(ids.num_groups));
  accumulate<Squares, false>(x, n, ids, groups, {});
  const std::vector<double> units = rescale<Squares>(x, n, ids, options, groups);
  std::vector<Affine> maps(groups.size());
  for (size_t g = 0; g < groups.size(); ++g)
    maps[g] = affine_of(groups[g], options, units.empty() || units[g] == 0.0 ? 1.0 : units[g]);
  const bool far = beyond_cache(maps);
  for (int64_t i = 0; i < n; ++i) {
    if (far) prefetch_group(ids, i, n, maps);
    out[i] = maps[ids(i)](static_cast<double>(x[i]));
  }
  if (units.empty()) return;
  for (int64_t i = 0; i < n; ++i) {  // the rescaled groups' rollouts, in their units
    const size_t g = ids(i);
    if (units[g] != 0.0) out[i] = maps[g](static_cast<double>(x[i]) * units[g]);
  }
}

template <class T, class Ids>
void indexed_for(const T* x, int64_t n, const Ids& ids, const AdvantageOptions& options, float* out) {
  if (options.estimator == Estimator::grpo)
    indexed<true>(x, n, ids, options, out);
  else
    indexed<false>(x, n, ids, options, out);
}

template <class Id>
void check_id_range(int64_t num_rollouts) {
  if (num_rollouts < 0) fail("the number of rollouts must be >= 0, got ", num_rollouts);
  if (num_rollouts > 0 && num_rollouts - 1 > static_cast<int64_t>(std::numeric_limits<Id>::max()))
    fail(num_rollouts, " rollouts need 64-bit group ids");
}

}  // namespace

void group_offsets(const GroupBounds& bounds, int64_t num_rollouts, bool allow_empty_groups, int64_t* offsets) {
  check_group_bounds(bounds, num_rollouts, allow_empty_groups);
  offsets[0] = 0;
  for (int64_t g = 0; g < num_groups(bounds); ++g) offsets[g + 1] = offsets[g] + size_of(bounds, g);
}

template <class T>
void segment_advantages(const T* rewards, int64_t num_rollouts, const GroupBounds& bounds,
                        const AdvantageOptions& options, float* out) {
  check_options(options);
  check_group_bounds(bounds, num_rollouts, options.allow_empty_groups);
  const bool squares = options.estimator == Estimator::grpo;
  int64_t begin = 0;
  for (int64_t g = 0; g < num_groups(bounds); ++g) {
    const int64_t n = size_of(bounds, g);
    // Checked above; checked again because the arrays may change while the GIL is released.
    if (n < 0 || n > num_rollouts - begin) fail("group bounds changed during the call");
    if (squares)
      segment<true>(rewards, begin, n, options, out);
    else
      segment<false>(rewards, begin, n, options, out);
    begin += n;
  }
}

template <class T, class Id>
void indexed_advantages(const T* rewards, int64_t num_rollouts, const Id* group_of, int64_t num_groups,
                        const AdvantageOptions& options, float* out) {
  check_options(options);
  if (num_rollouts < 0) fail("the number of rollouts must be >= 0, got ", num_rollouts);
  if (num_groups < 0) fail("num_groups must be >= 0, got ", num_groups);
  indexed_for(rewards, num_rollouts, GroupIds<Id>{group_of, num_groups}, options, out);
}

template <class T>
void keyed_advantages(const T* rewards, int64_t num_rollouts, const int64_t* keys, const AdvantageOptions& options,
                      float* out) {
  check_options(options);
  if (num_rollouts < 0) fail("the number of rollouts must be >= 0, got ", num_rollouts);
  if (num_rollouts == 0) return;
  const KeyRange range = key_range(keys, num_rollouts);
  // A slot per key in the span costs sizeof(Moments<true>) + sizeof(Affine) bytes: at most about 7 a rollout.
  if (range.span < static_cast<uint64_t>(num_rollouts / 8 + 64)) {
    const KeySlots slots{keys, range.lo, static_cast<int64_t>(range.span) + 1};
    indexed_for(rewards, num_rollouts, slots, options, out);
  } else if (num_rollouts <= std::numeric_limits<int32_t>::max()) {
    std::vector<int32_t> group_of(static_cast<size_t>(num_rollouts));
    const int64_t count = dense_groups(keys, num_rollouts, group_of.data());
    indexed_for(rewards, num_rollouts, GroupIds<int32_t>{group_of.data(), count}, options, out);
  } else {
    std::vector<int64_t> group_of(static_cast<size_t>(num_rollouts));
    const int64_t count = dense_groups(keys, num_rollouts, group_of.data());
    indexed_for(rewards, num_rollouts, GroupIds<int64_t>{group_of.data(), count}, options, out);
  }
}

template <class Id>
int64_t dense_groups(const int64_t* keys, int64_t num_rollouts, Id* group_of) {
  check_id_range<Id>(num_rollouts);
  if (num_rollouts == 0) return 0;
  const auto [lo, span] = key_range(keys, num_rollouts);
  // Keys within a span of N: a direct table, no hashing.
  if (span < static_cast<uint64_t>(num_rollouts)) {
    std::vector<Id> table(span + 1, Id(-1));
    Id count = 0;
    for (int64_t i = 0; i < num_rollouts; ++i) {
      if (i + kPrefetchAhead < num_rollouts) {
        const uint64_t ahead = static_cast<uint64_t>(keys[i + kPrefetchAhead]) - static_cast<uint64_t>(lo);
        if (ahead <= span) prefetch(&table[ahead]);
      }
      const uint64_t at = static_cast<uint64_t>(keys[i]) - static_cast<uint64_t>(lo);
      if (at > span) fail("keys changed during the call");
      Id& slot = table[at];
      if (slot < 0) slot = count++;
      group_of[i] = slot;
    }
    return count;
  }
  GroupTable<int64_t, std::equal_to<int64_t>> table;
  for (int64_t i = 0; i < num_rollouts; ++i) {
    if (i + kPrefetchAhead < num_rollouts) table.prefetch(static_cast<uint64_t>(keys[i + kPrefetchAhead]));
    group_of[i] = static_cast<Id>(table.id(keys[i], static_cast<uint64_t>(keys[i])));
  }
  return table.size();
}

template <class Id>
void group_order(const Id* group_of, int64_t num_rollouts, int64_t num_groups, int64_t* order, int64_t* sizes) {
  if (num_rollouts < 0) fail("the number of rollouts must be >= 0, got ", num_rollouts);
  if (num_groups < 0) fail("num_groups must be >= 0, got ", num_groups);
  const GroupIds<Id> ids{group_of, num_groups};
  std::fill(sizes, sizes + num_groups, int64_t{0});
  for (int64_t i = 0; i < num_rollouts; ++i) {
    if (i + kPrefetchAhead < num_rollouts) {
      const int64_t ahead = ids.raw(i + kPrefetchAhead);
      if (ahead >= 0 && ahead < num_groups) prefetch(sizes + ahead);
    }
    ++sizes[ids(i)];
  }
  std::vector<int64_t> next(static_cast<size_t>(num_groups));
  int64_t start = 0;
  for (int64_t g = 0; g < num_groups; ++g) {
    next[g] = start;
    start += sizes[g];
  }
  for (int64_t i = 0; i < num_rollouts; ++i) {
    prefetch_group(ids, i, num_rollouts, next);
    int64_t& slot = next[ids(i)];
    if (slot >= num_rollouts) fail("group_of changed during the call");
    order[slot++] = i;
  }
}

template void segment_advantages(const float*, int64_t, const GroupBounds&, const AdvantageOptions&, float*);
template void segment_advantages(const double*, int64_t, const GroupBounds&, const AdvantageOptions&, float*);
template void indexed_advantages(const float*, int64_t, const int32_t*, int64_t, const AdvantageOptions&, float*);
template void indexed_advantages(const float*, int64_t, const int64_t*, int64_t, const AdvantageOptions&, float*);
template void indexed_advantages(const double*, int64_t, const int32_t*, int64_t, const AdvantageOptions&, float*);
template void indexed_advantages(const double*, int64_t, const int64_t*, int64_t, const AdvantageOptions&, float*);
template void keyed_advantages(const float*, int64_t, const int64_t*, const AdvantageOptions&, float*);
template void keyed_advantages(const double*, int64_t, const int64_t*, const AdvantageOptions&, float*);
template int64_t dense_groups(const int64_t*, int64_t, int32_t*);
template int64_t dense_groups(const int64_t*, int64_t, int64_t*);
template void group_order(const int32_t*, int64_t, int64_t, int64_t*, int64_t*);
template void group_order(const int64_t*, int64_t, int64_t, int64_t*, int64_t*);

}  // namespace vipfast
