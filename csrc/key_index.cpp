#include "vipfast/key_index.hpp"

#include <algorithm>
#include <limits>

#include "vipfast/fail.hpp"

namespace vipfast {
namespace {

constexpr int64_t kMinSlots = 16;
constexpr int64_t kMaxRows = std::numeric_limits<int32_t>::max();

// splitmix64's finaliser: keys are often small consecutive integers, which linear probing
// would otherwise pile into one run of slots.
uint64_t mix(uint64_t key) {
  key ^= key >> 30;
  key *= 0xbf58476d1ce4e5b9ULL;
  key ^= key >> 27;
  key *= 0x94d049bb133111ebULL;
  return key ^ (key >> 31);
}

}  // namespace

KeyIndex::KeyIndex(const uint64_t* keys, int64_t count) {
  keys_.reserve(static_cast<size_t>(count));
  int64_t slots = kMinSlots;
  while (slots * 7 < count * 10) slots *= 2;  // load factor <= 0.7
  slot_keys_.assign(static_cast<size_t>(slots), 0);
  slot_rows_.assign(static_cast<size_t>(slots), -1);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t slot = slot_of(keys[i]);
    if (slot_rows_[slot] >= 0) fail("keys[", i, "] = ", keys[i], " repeats keys[", slot_rows_[slot], "]");
    slot_keys_[slot] = keys[i];
    slot_rows_[slot] = static_cast<int32_t>(i);
    keys_.push_back(keys[i]);
  }
}

int64_t KeyIndex::memory_bytes() const {
  return static_cast<int64_t>(slot_keys_.capacity() * sizeof(uint64_t) + slot_rows_.capacity() * sizeof(int32_t) +
                              keys_.capacity() * sizeof(uint64_t));
}

int64_t KeyIndex::slot_of(uint64_t key) const {
  const uint64_t mask = slot_keys_.size() - 1;
  uint64_t slot = mix(key) & mask;
  while (slot_rows_[slot] >= 0 && slot_keys_[slot] != key) slot = (slot + 1) & mask;
  return static_cast<int64_t>(slot);
}

void KeyIndex::find(const uint64_t* keys, int64_t count, int64_t* rows) const {
  for (int64_t i = 0; i < count; ++i) rows[i] = slot_keys_.empty() ? -1 : slot_rows_[slot_of(keys[i])];
}

void KeyIndex::insert(const uint64_t* keys, int64_t count, int64_t* rows) {
  for (int64_t i = 0; i < count; ++i) {
    if ((size() + 1) * 10 > static_cast<int64_t>(slot_keys_.size()) * 7) grow();
    const int64_t slot = slot_of(keys[i]);
    if (slot_rows_[slot] < 0) {
      if (size() >= kMaxRows) fail("a KeyIndex holds at most ", kMaxRows, " keys");
      slot_keys_[slot] = keys[i];
      slot_rows_[slot] = static_cast<int32_t>(size());
      keys_.push_back(keys[i]);
    }
    rows[i] = slot_rows_[slot];
  }
}

void KeyIndex::grow() {
  const int64_t slots = std::max<int64_t>(kMinSlots, static_cast<int64_t>(slot_keys_.size()) * 2);
  slot_keys_.assign(static_cast<size_t>(slots), 0);
  slot_rows_.assign(static_cast<size_t>(slots), -1);
  for (int64_t row = 0; row < size(); ++row) {
    const int64_t slot = slot_of(keys_[row]);
    slot_keys_[slot] = keys_[row];
    slot_rows_[slot] = static_cast<int32_t>(row);
  }
}

}  // namespace vipfast
