// Ragged group advantages on the CPU: GRPO, Dr. GRPO and RLOO per group of rollouts.
//
// For a group of n rollouts with mean m and Bessel-corrected std s:
//   grpo    A = (r - m) / (s + eps)
//   drgrpo  A = r - m
//   rloo    A = n / (n - 1) * (r - m)
// and A = 0 for a group of one rollout. Sums run in double over d = r - (the group's first
// reward), so an all-equal group gives exactly 0; one pass takes the sums, one writes A.
// Every function checks the structure it is given (sizes, offsets, group ids) before it reads
// or writes through it. No Python in here: errors are std::invalid_argument (vipfast::fail).
#pragma once

#include <cstdint>
#include <vector>

#include "vipfast/allocation.hpp"

namespace vipfast {

struct AdvantageOptions {
  Estimator estimator = Estimator::grpo;
  double eps = 1e-6;
  bool require_finite = true;  // a NaN or inf reward is an error instead of giving NaN
  bool allow_empty_groups = false;
};

// Groups given by sizes [G] (groups one after another) or CSR offsets [G+1].
struct GroupBounds {
  const int64_t* values;
  int64_t count;
  bool are_offsets;
};

// Checks the bounds against num_rollouts and writes offsets [G+1]; overflow-free for any input.
void group_offsets(const GroupBounds& bounds, int64_t num_rollouts, bool allow_empty_groups, int64_t* offsets);

// Contiguous groups: rewards [N] (T = float or double) -> out [N].
template <class T>
void segment_advantages(const T* rewards, int64_t num_rollouts, const GroupBounds& bounds,
                        const AdvantageOptions& options, float* out);

// Interleaved groups: group_of [N] holds each rollout's group in [0, num_groups).
template <class T, class Id>
void indexed_advantages(const T* rewards, int64_t num_rollouts, const Id* group_of, int64_t num_groups,
                        const AdvantageOptions& options, float* out);

// Interleaved groups named by int64 keys [N] (equal keys, one group): keys within a short span
// index the group state directly, others are numbered first (dense_groups).
template <class T>
void keyed_advantages(const T* rewards, int64_t num_rollouts, const int64_t* keys, const AdvantageOptions& options,
                      float* out);

// Dense group ids of int64 keys in order of first appearance; returns the number of groups.
template <class Id>
int64_t dense_groups(const int64_t* keys, int64_t num_rollouts, Id* group_of);

// Stable counting sort by group: order [N] lists each group's rollouts in turn, sizes [G].
template <class Id>
void group_order(const Id* group_of, int64_t num_rollouts, int64_t num_groups, int64_t* order, int64_t* sizes);

// Open-addressing table that numbers keys in order of first appearance. The caller gives each
// key's hash; Equal(a, b) decides equality of keys with the same hash (it may throw).
template <class Key, class Equal>
class GroupTable {
 public:
  explicit GroupTable(Equal equal = Equal{}) : equal_(equal) { resize(16); }

  // The dense id of key; an unseen key gets id size() - 1 after the call.
  int64_t id(const Key& key, uint64_t hash) {
    if (2 * (count_ + 1) > static_cast<int64_t>(slots_.size())) resize(2 * slots_.size());
    for (uint64_t i = slot_of(hash);; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.id < 0) {
        slot = Slot{hash, key, count_};
        return count_++;
      }
      if (slot.hash == hash && equal_(slot.key, key)) return slot.id;
    }
  }

  int64_t size() const { return count_; }

  // Brings the first slot a key of this hash probes into cache.
  void prefetch(uint64_t hash) const {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(&slots_[slot_of(hash)]);
#else
    (void)hash;
#endif
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    Key key{};
    int64_t id = -1;
  };

  // The top bits of splitmix64's finaliser: identity hashes of integers (Python's, and ours of
  // int64 keys) with a common stride still spread over the table.
  uint64_t slot_of(uint64_t hash) const {
    hash = (hash ^ (hash >> 30)) * 0xBF58476D1CE4E5B9ull;
    hash = (hash ^ (hash >> 27)) * 0x94D049BB133111EBull;
    return (hash ^ (hash >> 31)) >> shift_;
  }

  void resize(uint64_t capacity) {
    std::vector<Slot> old(capacity);
    old.swap(slots_);
    mask_ = capacity - 1;
    shift_ = 64;
    for (uint64_t c = capacity; c > 1; c >>= 1) --shift_;
    for (const Slot& slot : old) {
      if (slot.id < 0) continue;
      uint64_t i = slot_of(slot.hash);
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = slot;
    }
  }

  Equal equal_;
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  int shift_ = 64;
  int64_t count_ = 0;
};

}  // namespace vipfast
