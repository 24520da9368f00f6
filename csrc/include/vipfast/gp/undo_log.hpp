// Pre-images of plain values, saved before an object changes them and written back newest first
// when the change has to be undone.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace vipfast::gp {

class UndoLog {
 public:
  // Saves `count` values from `first`; they must stay where they are until commit or rollback.
  template <class T>
  void save(const T* first, int64_t count = 1) {
    static_assert(std::is_trivially_copyable_v<T>, "the undo log copies bytes");
    const size_t size = sizeof(T) * static_cast<size_t>(count);
    const size_t offset = bytes_.size();
    entries_.reserve(entries_.size() + 1);  // may throw: then nothing was recorded or changed
    bytes_.resize(offset + size);
    std::memcpy(bytes_.data() + offset, first, size);
    entries_.push_back({const_cast<T*>(first), offset, size});
  }

  void rollback() noexcept {
    for (auto entry = entries_.rbegin(); entry != entries_.rend(); ++entry)
      std::memcpy(entry->where, bytes_.data() + entry->offset, entry->size);
    commit();
  }

  // Keeps the changes; the buffers keep their capacity for the next change.
  void commit() noexcept {
    entries_.clear();
    bytes_.clear();
  }

 private:
  struct Entry {
    void* where;
    size_t offset, size;
  };
  std::vector<Entry> entries_;
  std::vector<unsigned char> bytes_;
};

}  // namespace vipfast::gp
