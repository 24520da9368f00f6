// A compact map from 64-bit prompt keys to dense row numbers 0..size-1, for per-prompt tables that
// must hold a whole dataset (a million prompts in tens of megabytes): open addressing with linear
// probing over two flat arrays, about 25 bytes per key. Rows are handed out in insertion order and
// never move; shrinking is done by building a new index from the keys to keep.
// No Python in here.
#pragma once

#include <cstdint>
#include <vector>

namespace vipfast {

class KeyIndex {
 public:
  KeyIndex() = default;
  // An index of `keys` (distinct; std::invalid_argument names the first repeat), row i for keys[i].
  KeyIndex(const uint64_t* keys, int64_t count);

  int64_t size() const { return static_cast<int64_t>(keys_.size()); }
  const std::vector<uint64_t>& keys() const { return keys_; }
  // Bytes held by the index (its arrays' capacity).
  int64_t memory_bytes() const;

  // rows[i] = row of keys[i], or -1 when absent.
  void find(const uint64_t* keys, int64_t count, int64_t* rows) const;
  // rows[i] = row of keys[i], inserting absent keys (in order of first appearance) at the end.
  void insert(const uint64_t* keys, int64_t count, int64_t* rows);

 private:
  int64_t slot_of(uint64_t key) const;  // the key's slot, or the empty slot where it would go
  void grow();

  std::vector<uint64_t> slot_keys_;
  std::vector<int32_t> slot_rows_;  // -1 = empty
  std::vector<uint64_t> keys_;      // by row
};

}  // namespace vipfast
