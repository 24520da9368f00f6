// The key store: every stored key's forgotten counts and the Gaussian pseudo-observation they make,
// its embedding, recency (an LRU list over the slots), the step counter, and the lengthscale in
// use. The engines read it; only observe, the Laplace step and advance change it.
#pragma once

#include "vipfast/gp/saved_state.hpp"
#include "vipfast/gp/undo_log.hpp"
#include "vipfast/success_gp.hpp"

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace vipfast::gp {

// One observe's rows after validation: normalised, duplicates merged in order of first occurrence.
struct ObservedBatch {
  int64_t rows = 0;
  const uint64_t* keys = nullptr;        // (rows)
  const double* embeddings = nullptr;    // (rows, dim), unit rows
  const double* squared_norms = nullptr; // (rows)
  std::vector<int64_t> first_row, last_row;  // per merged key: its first and last row
  std::vector<double> successes, trials;     // per merged key: sums over its rows
  std::unordered_map<uint64_t, int64_t> position;  // key -> merged index, while merging

  // Merges the rows (keys, embeddings and squared norms must be set).
  void merge(const double* row_successes, const int64_t* row_trials);
};

struct KeyRecord {
  uint64_t key;
  double successes, trials;  // forgotten sums as of observed_step
  int64_t observed_step;
  uint64_t recency;          // stamp of the last observation
  double target, precision;  // pseudo-observation y and its precision 1/s^2 at observed_step
  double linearisation;      // laplace: the model's mean at the key before observed_step's data
};

// A stored key an observe changed, in the order of the changes, with what it held before.
struct StoreChange {
  enum class Kind {
    merged,    // re-observed with the same embedding
    moved,     // re-observed with a new embedding
    evicted,   // least recently observed, removed to make room (its slot is reused next)
    inserted,  // a new key
  };
  Kind kind;
  int64_t slot;
  int64_t row;        // merged, moved, inserted: the batch row whose embedding the key now has
  double old_weight;  // merged, moved, evicted: forgetting weight of its evidence before the change
  double old_target;  // its pseudo-observation before the change
};

// A site the Laplace step moved, with its pseudo-observation before.
struct RelinearisedSite {
  int64_t slot;
  double old_target;
};

class KeyStore {
 public:
  explicit KeyStore(const SuccessGPConfig& config);

  int64_t size() const { return size_; }
  int64_t slots() const { return slots_; }
  int64_t step() const { return step_; }
  const double* embeddings() const { return embeddings_.data(); }  // (slots, dim)
  const double* embedding(int64_t slot) const { return embeddings_.data() + slot * dim_; }
  const double* squared_norms() const { return squared_norms_.data(); }
  const KeyRecord& record(int64_t slot) const { return records_[slot]; }
  int64_t find(uint64_t key) const;  // its slot, or -1
  double decay(int64_t age) const;
  double weight(int64_t slot) const { return decay(step_ - records_[slot].observed_step); }
  double prior_mean() const;         // mu0: fixed, or the forgetting-weighted mean of the targets
  double lengthscale() const { return lengthscale_; }  // NaN until one is known
  // An evenly strided subsample of `count` stored rows and their squared norms.
  void strided_sample(int64_t count, double* rows, double* squared_norms) const;
  PseudoObservations pseudo_observations() const;

  // Room for `new_keys` more keys, made before a change begins (the undo log keeps addresses).
  void reserve(int64_t new_keys);
  // Between begin_change and commit_change or rollback_change, every change is undoable.
  void begin_change();
  void commit_change() noexcept;
  void rollback_change() noexcept;

  // The Laplace Newton step: sites whose linearisation point is more than the tolerance from
  // `means` (size) move there; appends them to `moved`.
  void relinearise(const double* means, std::vector<RelinearisedSite>& moved);
  // Adds the batch's evidence; appends the changes to `changes`.
  void observe(const ObservedBatch& batch, std::vector<StoreChange>& changes);
  // Re-estimates the median-heuristic lengthscale when due; true when the one in use changed.
  bool refresh_lengthscale();
  void advance(int64_t steps);

  void save(SavedStore& saved) const;
  void restore(const SavedStore& saved);

 private:
  struct Links {
    int64_t prev, next;  // LRU neighbours; head = most recent
  };

  void ensure_slots(int64_t needed);
  void set_pseudo_observation(int64_t slot);
  void unlink(int64_t slot);
  void push_front(int64_t slot);
  void save_record(int64_t slot);
  void save_embedding(int64_t slot);
  void save_links(int64_t slot);
  double median_distance();

  const SuccessGPConfig config_;
  const int64_t dim_;
  int64_t step_ = 0;
  uint64_t seq_counter_ = 0;
  int64_t size_ = 0;
  int64_t slots_ = 0;  // allocated
  std::vector<KeyRecord> records_;       // (slots)
  std::vector<double> embeddings_;       // (slots, dim)
  std::vector<double> squared_norms_;    // (slots)
  std::vector<Links> links_;             // (slots)
  int64_t head_ = -1, tail_ = -1;
  std::unordered_map<uint64_t, int64_t> index_;  // key -> slot

  // Median-heuristic lengthscale and its refresh bookkeeping.
  double lengthscale_;
  bool lengthscale_provisional_ = false;
  int64_t lengthscale_count_ = 0;    // stored keys when last estimated
  int64_t lengthscale_inserts_ = 0;  // keys inserted since

  // The change in progress: pre-images, and the index entries it added and removed.
  bool changing_ = false;
  UndoLog undo_;
  uint64_t change_ = 0;                   // stamp of the change in progress
  std::vector<uint64_t> record_saved_;    // (slots) stamp of the change that saved the slot's record
  std::vector<uint64_t> embedding_saved_; // (slots)
  std::vector<uint64_t> inserted_keys_;
  std::vector<std::unordered_map<uint64_t, int64_t>::node_type> removed_entries_;

  // Scratch of the lengthscale heuristic (grow-only).
  std::vector<double> sample_rows_, sample_norms_, sample_gram_, distances_;
};

}  // namespace vipfast::gp
