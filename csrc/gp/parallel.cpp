#include "vipfast/gp/parallel.hpp"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>

#include <pthread.h>

namespace vipfast::gp {
namespace {

// One thread that runs one task at a time for whoever acquired it; it lives as long as the process.
class Helper {
 public:
  Helper() : thread_([this] { loop(); }) { thread_.detach(); }

  bool try_acquire() { return !busy_.exchange(true, std::memory_order_acquire); }

  void start(void (*call)(const void*, int64_t, int64_t), const void* fn, int64_t begin, int64_t end) {
    std::lock_guard<std::mutex> lock(mutex_);
    task_ = {call, fn, begin, end};
    error_ = nullptr;
    pending_ = true;
    wake_.notify_one();
  }

  // Waits for the started task, releases the helper and returns the task's exception, if any.
  std::exception_ptr finish() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return !pending_; });
    std::exception_ptr error = error_;
    lock.unlock();
    busy_.store(false, std::memory_order_release);
    return error;
  }

 private:
  struct Task {
    void (*call)(const void*, int64_t, int64_t);
    const void* fn;
    int64_t begin, end;
  };

  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return pending_; });
      const Task task = task_;
      lock.unlock();
      std::exception_ptr error;
      try {
        task.call(task.fn, task.begin, task.end);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      error_ = error;
      pending_ = false;
      done_.notify_one();
    }
  }

  std::atomic<bool> busy_{false};
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  Task task_{};
  bool pending_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts once the members it reads exist
};

// The process's helper, created on first use. A forked child has no helper thread: it forgets the
// parent's (leaked, never touched again) and creates its own.
std::mutex creation;
Helper* helper = nullptr;
bool creation_failed = false;

void before_fork() { creation.lock(); }
void after_fork_in_parent() { creation.unlock(); }
void after_fork_in_child() {
  helper = nullptr;
  creation_failed = false;
  creation.unlock();
}

Helper* process_helper() {
  std::lock_guard<std::mutex> lock(creation);
  if (helper == nullptr && !creation_failed) {
    static const bool registered = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;
    try {
      if (registered) helper = new Helper();
    } catch (const std::system_error&) {  // no thread available: every split runs inline
      creation_failed = true;
    }
  }
  return helper;
}

}  // namespace

void run_halves(int64_t rows, int64_t half, void (*call)(const void*, int64_t, int64_t), const void* fn) {
  Helper* worker = process_helper();
  if (worker == nullptr || !worker->try_acquire()) {  // same work, one half after the other
    call(fn, half, rows);
    call(fn, 0, half);
    return;
  }
  worker->start(call, fn, half, rows);
  try {
    call(fn, 0, half);
  } catch (...) {
    worker->finish();
    throw;
  }
  if (std::exception_ptr error = worker->finish()) std::rethrow_exception(error);
}

}  // namespace vipfast::gp
