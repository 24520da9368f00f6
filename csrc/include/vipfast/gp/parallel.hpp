// Row blocks split across two threads: the caller and one persistent helper thread per process.
#pragma once

#include <cstdint>

namespace vipfast::gp {

constexpr int64_t kMinSplitRows = 64;  // below 2x this, row blocks are not split

// Runs call(fn, begin, end) on [half, rows) on the helper thread (inline when it is busy with
// another model's work or cannot start) and on [0, half) on the calling thread; rethrows the
// first exception once both halves are done.
void run_halves(int64_t rows, int64_t half, void (*call)(const void*, int64_t, int64_t), const void* fn);

// Runs fn(begin, end) on two halves of [0, rows). The split depends on `rows` only, so results
// are the same bits on every machine and every run, wherever each half ran.
template <class Fn>
void split_rows(int64_t rows, const Fn& fn) {
  if (rows < 2 * kMinSplitRows) {
    fn(int64_t{0}, rows);
    return;
  }
  run_halves(rows, rows / 2, [](const void* f, int64_t begin, int64_t end) { (*static_cast<const Fn*>(f))(begin, end); },
             &fn);
}

}  // namespace vipfast::gp
