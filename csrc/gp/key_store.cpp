#include "vipfast/gp/key_store.hpp"
#include "vipfast/fail.hpp"
#include "vipfast/gp/kernel.hpp"
#include "vipfast/gp/quadrature.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace vipfast::gp {
namespace {

// Lengthscale heuristic: points in the median subsample, refresh trigger, adoption tolerance.
constexpr int64_t kMedianSample = 256;
constexpr double kRefreshFraction = 0.25;
constexpr double kLengthscaleTolerance = 0.05;
// Pseudo-observation noise is floored at this fraction of signal_var, so that absurd trial counts
// (n ~ 2^62) cannot make I + T^1/2 K T^1/2 too ill-conditioned to factor.
constexpr double kMinNoiseRatio = 1e-10;
// Laplace sites: the linearisation point stays within this many standard errors of the key's own
// binomial target, because one Newton step taken far out in the logistic's flat tail (the model
// says p ~ 0.001, the key now succeeds half the time) would overshoot by tens of logits.
constexpr double kLaplaceTrustRegion = 2.0;
// Sites whose linearisation point is within this many logits of the posterior mean are kept: 0.5
// re-linearises a third as many sites per step as 0.25 at no loss in the simulator (docs/success_gp.md).
constexpr double kRelinearisationTolerance = 0.5;
// Counters that grow by one per observed key; a state beyond this could overflow them.
constexpr int64_t kMaxCounter = int64_t{1} << 62;

double median_of(double* first, int64_t n) {
  double* mid = first + n / 2;
  std::nth_element(first, mid, first + n);
  if (n % 2 == 1) return *mid;
  return 0.5 * (*mid + *std::max_element(first, mid));
}

}  // namespace

void ObservedBatch::merge(const double* row_successes, const int64_t* row_trials) {
  position.clear();
  position.reserve(static_cast<size_t>(rows));
  first_row.clear();
  last_row.clear();
  successes.clear();
  trials.clear();
  for (int64_t i = 0; i < rows; ++i) {
    auto [it, inserted] = position.try_emplace(keys[i], static_cast<int64_t>(first_row.size()));
    if (inserted) {
      first_row.push_back(i);
      last_row.push_back(i);
      successes.push_back(0.0);
      trials.push_back(0.0);
    }
    successes[it->second] += row_successes[i];
    trials[it->second] += static_cast<double>(row_trials[i]);
    last_row[it->second] = i;
  }
}

KeyStore::KeyStore(const SuccessGPConfig& config)
    : config_(config), dim_(config.dim), lengthscale_(config.lengthscale.value_or(kNaN)) {}

int64_t KeyStore::find(uint64_t key) const {
  const auto it = index_.find(key);
  return it == index_.end() ? -1 : it->second;
}

double KeyStore::decay(int64_t age) const {
  return config_.forgetting == 1.0 ? 1.0 : std::pow(config_.forgetting, static_cast<double>(age));
}

double KeyStore::prior_mean() const {
  if (config_.prior_mean) return *config_.prior_mean;
  if (size_ == 0) return 0.0;
  double weighted = 0.0, weight_sum = 0.0, plain = 0.0;
  for (int64_t i = 0; i < size_; ++i) {
    const double g = weight(i);
    weighted += g * records_[i].target;
    weight_sum += g;
    plain += records_[i].target;
  }
  return weight_sum > 1e-250 ? weighted / weight_sum : plain / static_cast<double>(size_);
}

void KeyStore::strided_sample(int64_t count, double* rows, double* norms) const {
  for (int64_t j = 0; j < count; ++j) {
    const int64_t slot = j * size_ / count;
    std::copy_n(embedding(slot), dim_, rows + j * dim_);
    norms[j] = squared_norms_[slot];
  }
}

PseudoObservations KeyStore::pseudo_observations() const {
  PseudoObservations out;
  const auto n = static_cast<size_t>(size_);
  out.embeddings.assign(embeddings_.begin(), embeddings_.begin() + static_cast<std::ptrdiff_t>(n * dim_));
  for (size_t i = 0; i < n; ++i) {
    const KeyRecord& r = records_[i];
    out.keys.push_back(r.key);
    out.targets.push_back(r.target);
    out.successes.push_back(r.successes);
    out.trials.push_back(r.trials);
    out.noise_var.push_back(1.0 / (r.precision * weight(static_cast<int64_t>(i))));
    if (config_.noise == NoiseModel::laplace) out.linearisation.push_back(r.linearisation);
  }
  return out;
}

// ---- slots, links, pseudo-observations --------------------------------------------------------

void KeyStore::ensure_slots(int64_t needed) {
  if (needed <= slots_) return;
  const int64_t grown = std::min(config_.capacity, std::max(needed, slots_ + slots_ / 2 + 16));
  const auto n = static_cast<size_t>(grown);
  records_.resize(n);
  embeddings_.resize(n * static_cast<size_t>(dim_));
  squared_norms_.resize(n);
  links_.resize(n);
  record_saved_.resize(n, 0);
  embedding_saved_.resize(n, 0);
  index_.reserve(n);  // inserts up to capacity never rehash, so undoing them cannot fail
  slots_ = grown;
}

void KeyStore::reserve(int64_t new_keys) { ensure_slots(std::min(config_.capacity, size_ + new_keys)); }

void KeyStore::set_pseudo_observation(int64_t slot) {
  KeyRecord& r = records_[slot];
  const double k = r.successes, n = r.trials;
  double target, noise;
  if (config_.noise != NoiseModel::fixed) {
    // p~ = (k + 1/2)/(n + 1): logit = log(k + 1/2) - log(n - k + 1/2), s^2 = (n+1)/((k+1/2)(n-k+1/2)).
    const double a = k + 0.5, b = std::max(n - k, 0.0) + 0.5;
    target = std::log(a) - std::log(b);
    noise = (n + 1.0) / (a * b);
    if (config_.noise == NoiseModel::laplace) {
      // A key that never succeeded is consistent with every lower logit (and one that always
      // succeeded with every higher one): no bound on that side.
      const double reach = kLaplaceTrustRegion * std::sqrt(noise);
      const double low = k > 0 ? target - reach : -kInf, high = k < n ? target + reach : kInf;
      const double f = std::clamp(r.linearisation, low, high);
      const double p = sigmoid(f);
      // n >= 1 and f within reach of the target keep W away from 0 (W > 0.008 for every n).
      const double w = std::max(n * p * (1.0 - p), std::numeric_limits<double>::min());  // a loaded state's n
      target = f + (k - n * p) / w;
      noise = 1.0 / w;
    }
    noise += config_.jitter;
  } else {
    const double p = std::clamp(k / n, config_.clip, 1.0 - config_.clip);
    target = std::log(p) - std::log1p(-p);
    noise = config_.jitter;
  }
  r.target = target;
  r.precision = 1.0 / std::max(noise, kMinNoiseRatio * config_.signal_var);
}

void KeyStore::unlink(int64_t s) {
  const Links links = links_[s];
  if (links.prev >= 0) {
    save_links(links.prev);
    links_[links.prev].next = links.next;
  } else {
    head_ = links.next;
  }
  if (links.next >= 0) {
    save_links(links.next);
    links_[links.next].prev = links.prev;
  } else {
    tail_ = links.prev;
  }
}

void KeyStore::push_front(int64_t s) {
  save_links(s);
  links_[s] = {-1, head_};
  if (head_ >= 0) {
    save_links(head_);
    links_[head_].prev = s;
  }
  head_ = s;
  if (tail_ < 0) tail_ = s;
}

// ---- changes and their undo -------------------------------------------------------------------

void KeyStore::begin_change() {
  changing_ = true;
  ++change_;
  inserted_keys_.clear();
  removed_entries_.clear();
  undo_.save(&step_);
  undo_.save(&seq_counter_);
  undo_.save(&size_);
  undo_.save(&head_);
  undo_.save(&tail_);
  undo_.save(&lengthscale_);
  undo_.save(&lengthscale_provisional_);
  undo_.save(&lengthscale_count_);
  undo_.save(&lengthscale_inserts_);
}

void KeyStore::commit_change() noexcept {
  undo_.commit();
  inserted_keys_.clear();
  removed_entries_.clear();
  changing_ = false;
}

void KeyStore::rollback_change() noexcept {
  undo_.rollback();
  for (const uint64_t key : inserted_keys_) index_.erase(key);
  for (auto& entry : removed_entries_) index_.insert(std::move(entry));
  inserted_keys_.clear();
  removed_entries_.clear();
  changing_ = false;
}

void KeyStore::save_record(int64_t slot) {
  if (!changing_ || record_saved_[slot] == change_) return;
  undo_.save(&records_[slot]);
  undo_.save(&squared_norms_[slot]);
  record_saved_[slot] = change_;
}

void KeyStore::save_embedding(int64_t slot) {
  if (!changing_ || embedding_saved_[slot] == change_) return;
  undo_.save(embedding(slot), dim_);
  embedding_saved_[slot] = change_;
}

void KeyStore::save_links(int64_t slot) {
  if (changing_) undo_.save(&links_[slot]);
}

// ---- observe, the Laplace step, advance -------------------------------------------------------

void KeyStore::relinearise(const double* means, std::vector<RelinearisedSite>& moved) {
  for (int64_t slot = 0; slot < size_; ++slot) {
    KeyRecord& r = records_[slot];
    if (!(std::abs(means[slot] - r.linearisation) > kRelinearisationTolerance)) continue;
    save_record(slot);
    moved.push_back({slot, r.target});
    r.linearisation = means[slot];
    set_pseudo_observation(slot);
  }
}

void KeyStore::observe(const ObservedBatch& batch, std::vector<StoreChange>& changes) {
  // Laplace: a new key's first site is linearised at the prior mean, a known key's at its point
  // just refreshed; the next observe's Newton step moves both to the posterior mean.
  const double new_key_linearisation = config_.noise == NoiseModel::laplace ? prior_mean() : 0.0;
  inserted_keys_.reserve(batch.first_row.size());
  removed_entries_.reserve(batch.first_row.size());
  for (size_t u = 0; u < batch.first_row.size(); ++u) {
    if (batch.trials[u] == 0.0) continue;  // trials == 0: no evidence
    const uint64_t key = batch.keys[batch.first_row[u]];
    const int64_t row = batch.last_row[u];
    const double* x = batch.embeddings + row * dim_;
    int64_t slot = find(key);
    if (slot >= 0) {
      KeyRecord& r = records_[slot];
      const bool same = same_row(embedding(slot), x, dim_);
      const double g = weight(slot);
      changes.push_back({same ? StoreChange::Kind::merged : StoreChange::Kind::moved, slot, row, g, r.target});
      save_record(slot);
      r.successes = g * r.successes + batch.successes[u];
      r.trials = g * r.trials + batch.trials[u];
      if (!same) {
        save_embedding(slot);
        std::copy_n(x, dim_, embeddings_.data() + slot * dim_);
        squared_norms_[slot] = batch.squared_norms[row];
      }
      unlink(slot);
    } else {
      if (size_ == config_.capacity) {
        slot = tail_;
        changes.push_back({StoreChange::Kind::evicted, slot, -1, weight(slot), records_[slot].target});
        removed_entries_.push_back(index_.extract(records_[slot].key));
        unlink(slot);
      } else {
        slot = size_++;
      }
      save_record(slot);
      save_embedding(slot);
      KeyRecord& r = records_[slot];
      r.key = key;
      r.successes = batch.successes[u];
      r.trials = batch.trials[u];
      if (config_.noise == NoiseModel::laplace) r.linearisation = new_key_linearisation;
      std::copy_n(x, dim_, embeddings_.data() + slot * dim_);
      squared_norms_[slot] = batch.squared_norms[row];
      index_.emplace(key, slot);
      inserted_keys_.push_back(key);
      ++lengthscale_inserts_;
      changes.push_back({StoreChange::Kind::inserted, slot, row, 0.0, 0.0});
    }
    records_[slot].observed_step = step_;
    records_[slot].recency = ++seq_counter_;
    push_front(slot);
    set_pseudo_observation(slot);
  }
}

void KeyStore::advance(int64_t steps) {
  if (steps < 0) fail("steps must be >= 0, got ", steps);
  if (step_ > std::numeric_limits<int64_t>::max() - steps) fail("step counter would overflow int64");
  step_ += steps;
}

// ---- lengthscale --------------------------------------------------------------------------------

// Median pairwise distance over an evenly strided subsample of the stored keys (all of them
// when at most kMedianSample); NaN when no two distinct points exist.
double KeyStore::median_distance() {
  const int64_t sample = std::min(size_, kMedianSample);
  if (sample < 2) return kNaN;
  double* pts = grow(sample_rows_, sample * dim_);
  double* sq = grow(sample_norms_, sample);
  strided_sample(sample, pts, sq);
  double* g = grow(sample_gram_, sample * sample);
  cross_gram(pts, sample, pts, sample, dim_, g);
  const int64_t pairs = sample * (sample - 1) / 2;
  double* dist = grow(distances_, pairs);
  int64_t p = 0;
  for (int64_t i = 0; i < sample; ++i)
    for (int64_t j = i + 1; j < sample; ++j)
      dist[p++] = std::sqrt(std::max(0.0, sq[i] + sq[j] - 2.0 * g[i * sample + j]));
  const double median = median_of(dist, pairs);
  if (median > 0) return median;
  int64_t positive = 0;
  for (int64_t q = 0; q < pairs; ++q)
    if (dist[q] > 0) dist[positive++] = dist[q];
  return positive > 0 ? median_of(dist, positive) : kNaN;
}

// Re-estimates once the stored set grew or turned over by a quarter since the last estimate;
// adopts the new value if it moved by more than kLengthscaleTolerance.
bool KeyStore::refresh_lengthscale() {
  if (config_.lengthscale || size_ == 0) return false;
  const auto count = static_cast<double>(lengthscale_count_);
  const bool due = std::isnan(lengthscale_) || lengthscale_provisional_ ||
                   static_cast<double>(size_) >= (1.0 + kRefreshFraction) * count ||
                   static_cast<double>(lengthscale_inserts_) >= kRefreshFraction * count;
  if (!due) return false;
  const double estimate = median_distance();
  lengthscale_count_ = size_;
  lengthscale_inserts_ = 0;
  if (std::isnan(estimate)) {
    if (!std::isnan(lengthscale_)) return false;
    lengthscale_ = 1.0;  // until two distinct points exist; unit vectors lie within distance 2
    lengthscale_provisional_ = true;
    return true;
  }
  if (std::isnan(lengthscale_) || lengthscale_provisional_ ||
      std::abs(estimate / lengthscale_ - 1.0) > kLengthscaleTolerance) {
    lengthscale_ = estimate;
    lengthscale_provisional_ = false;
    return true;
  }
  return false;
}

// ---- state --------------------------------------------------------------------------------------

void KeyStore::save(SavedStore& s) const {
  s.step = step_;
  s.seq_counter = static_cast<int64_t>(seq_counter_);
  s.lengthscale_in_use = std::isnan(lengthscale_) ? -1.0 : lengthscale_;
  s.lengthscale_provisional = lengthscale_provisional_ ? 1 : 0;
  s.lengthscale_count = lengthscale_count_;
  s.lengthscale_inserts = lengthscale_inserts_;
  s.embeddings.assign(embeddings_.begin(), embeddings_.begin() + size_ * dim_);
  for (int64_t i = 0; i < size_; ++i) {
    const KeyRecord& r = records_[i];
    s.keys.push_back(r.key);
    s.successes.push_back(r.successes);
    s.trials.push_back(r.trials);
    s.observed_step.push_back(r.observed_step);
    s.recency.push_back(static_cast<int64_t>(r.recency));
    if (config_.noise == NoiseModel::laplace) s.linearisation.push_back(r.linearisation);
  }
}

void KeyStore::restore(const SavedStore& s) {
  if (s.step < 0) fail("state['step'] = ", s.step, " is negative");
  if (s.seq_counter < 0 || s.seq_counter > kMaxCounter)
    fail("state['seq_counter'] = ", s.seq_counter, " is outside [0, 2^62]");
  const double ell = s.lengthscale_in_use;
  if (!(std::isfinite(ell) && (ell >= kMinLengthscale || ell == -1.0)))
    fail("state['lengthscale_in_use'] = ", ell, " is invalid");
  if (config_.lengthscale && ell != *config_.lengthscale)
    fail("state['lengthscale_in_use'] disagrees with state['lengthscale']");
  if (s.lengthscale_count < 0 || s.lengthscale_count > config_.capacity)
    fail("state['lengthscale_count'] = ", s.lengthscale_count, " is outside [0, capacity]");
  if (s.lengthscale_inserts < 0 || s.lengthscale_inserts > kMaxCounter)
    fail("state['lengthscale_inserts'] = ", s.lengthscale_inserts, " is outside [0, 2^62]");
  const auto n = static_cast<int64_t>(s.keys.size());
  if (n > config_.capacity) fail("state holds ", n, " keys but its capacity is ", config_.capacity);
  if (n > 0 && ell == -1.0) fail("state has stored keys but no lengthscale");
  step_ = s.step;
  seq_counter_ = static_cast<uint64_t>(s.seq_counter);
  lengthscale_ = ell > 0 ? ell : kNaN;
  lengthscale_provisional_ = s.lengthscale_provisional != 0;
  lengthscale_count_ = s.lengthscale_count;
  lengthscale_inserts_ = s.lengthscale_inserts;
  ensure_slots(n);
  size_ = n;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double k = s.successes[i], trials = s.trials[i];
    if (!(trials > 0 && k >= 0 && k <= trials))
      fail("state has invalid counts for key ", s.keys[i], ": successes ", k, ", trials ", trials);
    if (s.observed_step[i] < 0 || s.observed_step[i] > step_)
      fail("state['observed_step'][", i, "] = ", s.observed_step[i], " is outside [0, step]");
    if (s.recency[i] <= 0 || static_cast<uint64_t>(s.recency[i]) > seq_counter_)
      fail("state['recency'][", i, "] = ", s.recency[i], " is outside [1, seq_counter]");
    const double* row = &s.embeddings[i * dim_];
    const double norm2 = sum_squares(row, dim_);
    if (!(std::abs(norm2 - 1.0) < 1e-6)) fail("state['embeddings'][", i, "] is not unit length");
    if (!index_.emplace(s.keys[i], i).second) fail("state['keys'] repeats key ", s.keys[i]);
    std::copy_n(row, dim_, embeddings_.data() + i * dim_);
    squared_norms_[i] = norm2;
    KeyRecord& r = records_[i];
    r = {s.keys[i], k, trials, s.observed_step[i], static_cast<uint64_t>(s.recency[i]), 0.0, 0.0, 0.0};
    if (config_.noise == NoiseModel::laplace) r.linearisation = s.linearisation[i];
    set_pseudo_observation(i);
    order[i] = i;
  }
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return records_[a].recency < records_[b].recency; });
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0 && records_[order[i]].recency == records_[order[i - 1]].recency) fail("state['recency'] repeats a value");
    push_front(order[i]);
  }
}

}  // namespace vipfast::gp
