#include "vipfast/gp/fast_engine.hpp"
#include "vipfast/fail.hpp"
#include "vipfast/gp/kernel.hpp"
#include "vipfast/gp/parallel.hpp"

#include <Eigen/Cholesky>

#include <atomic>
#include <chrono>
#include <cmath>
#include <random>

namespace vipfast::gp {
namespace {

constexpr int64_t kPoolFactor = 8;  // k-means on at most 8 M stored keys
constexpr double kInducingJitter = 1e-8;
// Coverage: a rebuild once the running mean of new keys' residual variance exceeds
// kCoverageFactor times its value at selection plus kCoverageMargin signal_var.
constexpr double kCoverageEma = 0.3;
constexpr double kCoverageFactor = 2.0;
constexpr double kCoverageMargin = 0.05;
constexpr int64_t kChunk = 1024;  // rows per block when computing the features of the stored set
// A saved state's features and sums must match the engine's own, computed again, within these
// (relative) tolerances: far above rounding, far below what another kernel or other counts give.
constexpr double kFeatureTolerance = 1e-8;
constexpr double kSumTolerance = 1e-6;

bool close_to(const Eigen::MatrixXd& saved, const Eigen::MatrixXd& computed) {
  if (saved.size() == 0) return true;
  return (saved - computed).cwiseAbs().maxCoeff() <= kSumTolerance * (1.0 + computed.cwiseAbs().maxCoeff());
}

// Ids of inducing sets: a process-wide counter from a random start, so that a prediction is never
// taken for one made with another set, by another model or in another process.
uint64_t next_inducing_id() {
  static std::atomic<uint64_t> counter{[] {
    uint64_t seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    try {
      std::random_device device;
      seed ^= (static_cast<uint64_t>(device()) << 32) | device();
    } catch (const std::exception&) {  // no entropy source: the clock alone
    }
    return seed;
  }()};
  uint64_t id = counter.fetch_add(1);
  while (id == 0) id = counter.fetch_add(1);  // 0 means "no inducing set"
  return id;
}

}  // namespace

void FastEngine::Terms::add(const double* phi, int64_t m, Term term) {
  const auto row = static_cast<size_t>(terms.size());
  rows.resize(std::max(rows.size(), (row + 1) * static_cast<size_t>(m)));
  std::copy_n(phi, m, rows.data() + row * m);
  terms.push_back(term);
}

FastEngine::FastEngine(const SuccessGPConfig& config, InducingPoints z)
    : config_(config), dim_(config.dim), m_(z.count), id_(next_inducing_id()), z_(std::move(z.points)),
      z_sq_(std::move(z.squared_norms)), lengthscale_(kNaN) {}

// ---- construction, state ------------------------------------------------------------------------

std::unique_ptr<FastEngine> FastEngine::build(const SuccessGPConfig& config, const KeyStore& store) {
  const int64_t size = store.size(), d = config.dim;
  if (size == 0) return nullptr;
  const int64_t pool = std::min(size, kPoolFactor * config.num_inducing);
  std::vector<double> rows(static_cast<size_t>(pool * d)), norms(static_cast<size_t>(pool));
  store.strided_sample(pool, rows.data(), norms.data());
  InducingPoints z = select_inducing_points(rows.data(), norms.data(), pool, d, std::min(config.num_inducing, pool),
                                            config.signal_var, store.lengthscale());
  std::unique_ptr<FastEngine> engine(new FastEngine(config, std::move(z)));
  engine->lengthscale_ = store.lengthscale();
  engine->size_at_selection_ = size;
  engine->factor_inducing_kernel();
  engine->reserve(store.slots());
  for (int64_t start = 0; start < size; start += kChunk) {
    const int64_t count = std::min(kChunk, size - start);
    engine->features(store.embedding(start), store.squared_norms() + start, count, engine->phi(start));
  }
  double total = 0.0;
  for (int64_t slot = 0; slot < size; ++slot) {
    engine->set_site(store, slot);
    total += engine->delta_[slot];
  }
  engine->delta_ref_ = engine->delta_ema_ = total / static_cast<double>(size);
  engine->resum_information(store);
  return engine;
}

std::unique_ptr<FastEngine> FastEngine::restore(const SuccessGPConfig& config, const KeyStore& store,
                                                const SavedFastEngine& saved, bool legacy) {
  const int64_t m = saved.num_inducing_used, n = store.size(), d = config.dim;
  InducingPoints z{m, saved.inducing_points, std::vector<double>(static_cast<size_t>(m))};
  for (int64_t k = 0; k < m; ++k) z.squared_norms[k] = sum_squares(&z.points[k * d], d);
  std::unique_ptr<FastEngine> engine(new FastEngine(config, std::move(z)));
  FastEngine& g = *engine;
  g.lengthscale_ = store.lengthscale();
  try {
    g.factor_inducing_kernel();
  } catch (const NumericalFailure&) {
    fail("state['inducing_points'] give a kernel matrix that is not positive definite");
  }
  g.reserve(store.slots());
  std::copy(saved.features.begin(), saved.features.end(), g.phi_.begin());
  for (int64_t slot = 0; slot < n; ++slot) g.set_site(store, slot);
  g.s_info_ = Eigen::MatrixXd::Zero(m, m);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j <= i; ++j) g.s_info_(i, j) = saved.information[i * m + j];
  g.c_info_ = ConstVecMap(saved.information_targets.data(), m);
  g.e_info_ = ConstVecMap(saved.information_weights.data(), m);
  if (legacy && g.s_info_.diagonal().minCoeff() < 0) g.resum_information(store);
  for (int64_t i = 0; i < m; ++i)
    if (g.s_info_(i, i) < 0) fail("state['information'] has a negative diagonal entry at ", i);
  Eigen::MatrixXd precision = g.s_info_.selfadjointView<Eigen::Lower>();
  precision.diagonal().array() += 1.0;
  if (Eigen::LLT<Eigen::MatrixXd>(precision).info() != Eigen::Success)
    fail("state['information'] is not positive semi-definite");
  g.check_consistency(store);
  g.delta_ref_ = saved.coverage_reference;
  g.delta_ema_ = saved.coverage_average;
  if (!(std::isfinite(g.delta_ref_) && std::isfinite(g.delta_ema_))) fail("state coverage statistics are not finite");
  g.size_at_selection_ = saved.inducing_selected_at;
  if (g.size_at_selection_ < 0 || g.size_at_selection_ > config.capacity)
    fail("state['inducing_selected_at'] = ", g.size_at_selection_, " is outside [0, capacity]");
  return engine;
}

// The features and sums are redundant: what the engine computes from the stored keys and the
// inducing points. A state assembled from parts that do not belong together (another kernel,
// other counts) is refused here rather than left to fail later.
void FastEngine::check_consistency(const KeyStore& store) {
  const int64_t n = store.size();
  std::vector<double> computed(static_cast<size_t>(std::min(kChunk, n) * m_));
  const double tolerance = kFeatureTolerance * std::sqrt(config_.signal_var);
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t rows = std::min(kChunk, n - start);
    features(store.embedding(start), store.squared_norms() + start, rows, computed.data());
    for (int64_t i = 0; i < rows * m_; ++i)
      if (!(std::abs(computed[i] - phi_[start * m_ + i]) <= tolerance))
        fail("state['features'] do not match the embeddings, the inducing points and the kernel");
  }
  const Eigen::MatrixXd saved_s = s_info_.triangularView<Eigen::Lower>();
  const Eigen::VectorXd saved_c = c_info_, saved_e = e_info_;
  resum_information(store);
  const bool consistent = close_to(saved_s, s_info_.triangularView<Eigen::Lower>()) && close_to(saved_c, c_info_) &&
                          close_to(saved_e, e_info_);
  s_info_ = saved_s;
  c_info_ = saved_c;
  e_info_ = saved_e;
  if (!consistent)
    fail("state['information'], its targets and weights do not match the features and the stored counts");
}

void FastEngine::save(const KeyStore& store, SavedFastEngine& saved) const {
  saved.num_inducing_used = m_;
  saved.inducing_points = z_;
  saved.features.assign(phi_.begin(), phi_.begin() + store.size() * m_);
  const RowMatrix lower = s_info_.triangularView<Eigen::Lower>();
  saved.information.assign(lower.data(), lower.data() + m_ * m_);
  saved.information_targets.assign(c_info_.data(), c_info_.data() + m_);
  saved.information_weights.assign(e_info_.data(), e_info_.data() + m_);
  saved.coverage_reference = delta_ref_;
  saved.coverage_average = delta_ema_;
  saved.inducing_selected_at = size_at_selection_;
}

void FastEngine::reserve(int64_t slots) {
  if (slots <= slots_) return;
  const auto n = static_cast<size_t>(slots);
  phi_.resize(n * static_cast<size_t>(m_), 0.0);
  delta_.resize(n);
  site_.resize(n);
  update_of_slot_.resize(n, -1);
  slots_ = slots;
}

// ---- the inducing set ---------------------------------------------------------------------------

void FastEngine::factor_inducing_kernel() {
  RowMatrix kmm(m_, m_);
  kmm.noalias() = ConstRowMap(z_.data(), m_, dim_) * ConstRowMap(z_.data(), m_, dim_).transpose();
  gram_to_kernel(kmm.data(), m_, m_, z_sq_.data(), z_sq_.data(), config_.signal_var, lengthscale_);
  for (double jitter = kInducingJitter;; jitter *= 10) {
    Eigen::MatrixXd a = kmm;
    a.diagonal().array() += jitter * config_.signal_var;
    Eigen::LLT<Eigen::MatrixXd> llt(a);
    if (llt.info() == Eigen::Success && llt.matrixLLT().diagonal().allFinite()) {
      l_mm_ = llt.matrixL();
      return;
    }
    if (jitter > 1e-2) numerical_failure("the inducing-point kernel matrix is not positive definite");
  }
}

// Whitened features of `count` unit rows: out = (L_mm^-1 K(Z, x))^T, (count, m) row-major.
void FastEngine::features(const double* pts, const double* pts_sq, int64_t count, double* out) {
  split_rows(count, [&](int64_t begin, int64_t end) {
    RowMap k(out + begin * m_, end - begin, m_);
    cross_gram(pts + begin * dim_, end - begin, z_.data(), m_, dim_, k.data());
    gram_to_kernel(k.data(), end - begin, m_, pts_sq + begin, z_sq_.data(), config_.signal_var, lengthscale_);
    l_mm_.triangularView<Eigen::Lower>().solveInPlace(k.transpose());
  });
}

double FastEngine::residual_variance(const double* f) const {
  return std::max(0.0, config_.signal_var - sum_squares(f, m_));
}

void FastEngine::set_site(const KeyStore& store, int64_t slot) {
  const double tau = store.record(slot).precision;
  delta_[slot] = residual_variance(phi(slot));
  site_[slot] = tau / (1.0 + tau * delta_[slot]);
}

// ---- the information sums -----------------------------------------------------------------------

void FastEngine::resum_information(const KeyStore& store) {
  s_info_.setZero(m_, m_);
  c_info_.setZero(m_);
  e_info_.setZero(m_);
  std::vector<Term> chunk;
  for (int64_t start = 0; start < store.size(); start += kChunk) {
    const int64_t rows = std::min(kChunk, store.size() - start);
    chunk.resize(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      const double w = site_weight(store, start + r);
      chunk[r] = {w, w * store.record(start + r).target, w};
    }
    apply_terms(phi(start), chunk.data(), rows);
  }
}

// S += sum_r w_r phi_r phi_r^T, c += sum_r cy_r phi_r, e += sum_r ce_r phi_r over `count` rows
// of `f` (row-major, stride m). Positive and negative weights go to two symmetric rank updates.
void FastEngine::apply_terms(const double* f, const Term* t, int64_t count) {
  if (count == 0) return;
  double* cy = grow(term_cy_, count);
  double* ce = grow(term_ce_, count);
  int64_t positive = 0, negative = 0;
  for (int64_t r = 0; r < count; ++r) {
    cy[r] = t[r].cy;
    ce[r] = t[r].ce;
    positive += t[r].w > 0;
    negative += t[r].w < 0;
  }
  double* pos = grow(positive_rows_, positive * m_);
  double* neg = grow(negative_rows_, negative * m_);
  positive = negative = 0;
  for (int64_t r = 0; r < count; ++r) {
    if (t[r].w == 0) continue;
    const double root = std::sqrt(std::abs(t[r].w));
    double* out = t[r].w > 0 ? pos + (positive++) * m_ : neg + (negative++) * m_;
    for (int64_t j = 0; j < m_; ++j) out[j] = root * f[r * m_ + j];
  }
  rank_update(pos, positive, 1.0);
  rank_update(neg, negative, -1.0);
  const ConstRowMap a(f, count, m_);
  c_info_.noalias() += a.transpose() * ConstVecMap(cy, count);
  e_info_.noalias() += a.transpose() * ConstVecMap(ce, count);
}

// S += sign * A^T A (lower triangle); two halves of the rows in parallel.
void FastEngine::rank_update(const double* a, int64_t rows, double sign) {
  if (rows == 0) return;
  if (rows < 2 * kMinSplitRows) {
    s_info_.selfadjointView<Eigen::Lower>().rankUpdate(ConstRowMap(a, rows, m_).transpose(), sign);
  } else {
    s_half_.setZero(m_, m_);
    split_rows(rows, [&](int64_t begin, int64_t end) {
      Eigen::MatrixXd& target = begin == 0 ? s_info_ : s_half_;
      target.selfadjointView<Eigen::Lower>().rankUpdate(ConstRowMap(a + begin * m_, end - begin, m_).transpose(), sign);
    });
    s_info_.triangularView<Eigen::Lower>() += s_half_;
  }
  // S_ii is a sum of w phi_i^2 >= 0; removing a term can leave it a rounding error below 0, which
  // a saved state would then carry as a negative diagonal entry.
  if (sign < 0)
    for (int64_t i = 0; i < m_; ++i) s_info_(i, i) = std::max(s_info_(i, i), 0.0);
}

void FastEngine::advance(double g) {
  if (s_info_.diagonal().maxCoeff() * g < 1e-200) {  // everything forgotten: avoid denormals
    s_info_.setZero();
    c_info_.setZero();
    e_info_.setZero();
  } else {
    s_info_.triangularView<Eigen::Lower>() *= g;
    c_info_ *= g;
    e_info_ *= g;
  }
  factor_valid_ = false;
}

// ---- prediction ---------------------------------------------------------------------------------

void FastEngine::factor(const KeyStore& store) {
  prior_mean_ = store.prior_mean();
  p_chol_.resize(m_, m_);
  p_chol_.triangularView<Eigen::Lower>() = s_info_.triangularView<Eigen::Lower>();
  p_chol_.diagonal().array() += 1.0;
  Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(p_chol_);
  if (llt.info() != Eigen::Success || !p_chol_.diagonal().allFinite())
    numerical_failure("the fast engine's posterior precision I + S is not positive definite");
  p_mean_ = c_info_ - prior_mean_ * e_info_;
  p_chol_.triangularView<Eigen::Lower>().solveInPlace(p_mean_);
  p_chol_.triangularView<Eigen::Lower>().transpose().solveInPlace(p_mean_);
  factor_valid_ = true;
}

void FastEngine::inducing_means(const KeyStore& store, double* means) {
  if (!factor_valid_) factor(store);
  VecMap(means, store.size()).noalias() = ConstRowMap(phi_.data(), store.size(), m_) * p_mean_;
  VecMap(means, store.size()).array() += prior_mean_;
}

void FastEngine::predict(const KeyStore& store, int64_t count, const uint64_t* keys, const double* x, const double* xs,
                         double* mean, double* var, PredictionBasis* basis) {
  if (!factor_valid_) factor(store);
  // Feature rows of the queries: a stored key with the same embedding uses its own (and gets the
  // residual correction below); the rest are computed in one block.
  double* f = grow(query_features_, count * m_);
  query_slot_.assign(static_cast<size_t>(count), -1);
  block_slots_.clear();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t slot = store.find(keys[i]);
    if (slot >= 0 && same_row(store.embedding(slot), x + i * dim_, dim_)) {
      query_slot_[i] = slot;
      std::copy_n(phi(slot), m_, f + i * m_);
    } else {
      block_slots_.push_back(i);
    }
  }
  const auto fresh = static_cast<int64_t>(block_slots_.size());
  if (fresh > 0) {
    double* pts = grow(block_rows_, fresh * dim_);
    double* sq = grow(block_norms_, fresh);
    gather_rows(x, xs, dim_, block_slots_.data(), fresh, pts, sq);
    double* out = grow(block_features_, fresh * m_);
    if (basis) {
      basis->features.resize(static_cast<size_t>(fresh * m_));
      out = basis->features.data();
      basis->feature_rows.assign(block_slots_.begin(), block_slots_.end());
      basis->feature_embeddings.assign(pts, pts + fresh * dim_);
    }
    features(pts, sq, fresh, out);
    for (int64_t r = 0; r < fresh; ++r) std::copy_n(out + r * m_, m_, f + block_slots_[r] * m_);
  }
  if (basis) {
    basis->inducing_id = id_;
    basis->feature_width = m_;
  }

  const ConstRowMap features_q(f, count, m_);
  VecMap(mean, count).noalias() = features_q * p_mean_;
  double* v = grow(query_whitened_, count * m_);
  std::copy_n(f, count * m_, v);
  split_rows(count, [&](int64_t begin, int64_t end) {
    RowMap whitened(v + begin * m_, end - begin, m_);
    p_chol_.triangularView<Eigen::Lower>().solveInPlace(whitened.transpose());
  });
  for (int64_t i = 0; i < count; ++i) {
    const double vq = sum_squares(v + i * m_, m_);  // Var[q] of the inducing-point part
    const double mq = prior_mean_ + mean[i];
    const int64_t slot = query_slot_[i];
    if (slot < 0) {
      mean[i] = mq;
      var[i] = vq + residual_variance(f + i * m_);
      continue;
    }
    // FITC residual correction for a stored key predicted at its own embedding: remove its
    // site from q (cavity), add the residual r ~ N(0, delta), and condition on its observation.
    const double g = store.weight(slot);
    const double y = store.record(slot).target;
    const double site_now = site_[slot] * g, tau_now = store.record(slot).precision * g;
    const double vc = vq / std::max(1.0 - site_now * vq, 1e-300);
    const double mc = mq + vc * site_now * (mq - y);
    const double a = vc + delta_[slot];
    const double denom = 1.0 + a * tau_now;
    mean[i] = (mc + a * tau_now * y) / denom;
    var[i] = a / denom;
  }
}

// ---- observe ------------------------------------------------------------------------------------

void FastEngine::begin_change() {
  changing_ = true;
  relinearised_.clear();
  updated_.clear();
  updates_.clear();
  undo_.save(&delta_ema_);
}

void FastEngine::commit_change() noexcept {
  undo_.commit();
  changing_ = false;
}

void FastEngine::rollback_change() noexcept {
  undo_.rollback();
  for (const Update& up : updates_) update_of_slot_[up.slot] = -1;
  changing_ = false;
  factor_valid_ = false;
}

void FastEngine::save_site(int64_t slot) {
  if (!changing_) return;
  undo_.save(&delta_[slot]);
  undo_.save(&site_[slot]);
}

void FastEngine::save_features(int64_t slot) {
  if (changing_) undo_.save(phi(slot), m_);
}

void FastEngine::restage_sites(const KeyStore& store, const std::vector<RelinearisedSite>& moved) {
  for (const RelinearisedSite& site : moved) {
    const double old_weight = site_weight(store, site.slot);
    save_site(site.slot);
    set_site(store, site.slot);
    const double w = site_weight(store, site.slot);
    const double y = store.record(site.slot).target;
    relinearised_.add(phi(site.slot), m_, {w - old_weight, w * y - old_weight * site.old_target, w - old_weight});
  }
  if (!moved.empty()) factor_valid_ = false;
}

void FastEngine::stage_changes(const KeyStore& store, const std::vector<StoreChange>& changes,
                               const PredictionBasis* reusable) {
  // Removals go to the terms now, while phi still holds the removed keys' features.
  for (const StoreChange& change : changes) {
    const int64_t slot = change.slot;
    switch (change.kind) {
      case StoreChange::Kind::merged:
      case StoreChange::Kind::moved: {
        const double old_weight = site_[slot] * change.old_weight;
        const bool merge = change.kind == StoreChange::Kind::merged;
        if (!merge) updated_.add(phi(slot), m_, {-old_weight, -old_weight * change.old_target, -old_weight});
        update_of_slot_[slot] = static_cast<int64_t>(updates_.size());
        updates_.push_back({slot, change.row, !merge, true, merge, old_weight, change.old_target});
        break;
      }
      case StoreChange::Kind::evicted: {
        const int64_t earlier = update_of_slot_[slot];
        if (earlier < 0) {
          const double w = site_[slot] * change.old_weight;
          updated_.add(phi(slot), m_, {-w, -w * change.old_target, -w});
        } else {  // inserted or updated earlier in this batch: undo that instead
          Update& up = updates_[earlier];
          up.live = false;
          if (up.merge) updated_.add(phi(slot), m_, {-up.old_weight, -up.old_weight * up.old_target, -up.old_weight});
        }
        break;
      }
      case StoreChange::Kind::inserted:
        update_of_slot_[slot] = static_cast<int64_t>(updates_.size());
        updates_.push_back({slot, change.row, true, true, false, 0.0, 0.0});
        break;
    }
  }
  for (const Update& up : updates_) update_of_slot_[up.slot] = -1;
  compute_fresh_features(store, reusable);
  double batch_delta = 0.0;
  int64_t live = 0;
  for (const Update& up : updates_) {
    if (!up.live) continue;
    ++live;
    save_site(up.slot);
    set_site(store, up.slot);
    batch_delta += delta_[up.slot];
    const double w = site_[up.slot];
    const double old_w = up.merge ? up.old_weight : 0.0;
    const double y = store.record(up.slot).target;
    updated_.add(phi(up.slot), m_, {w - old_w, w * y - old_w * up.old_target, w - old_w});
  }
  if (live > 0)
    delta_ema_ = (1.0 - kCoverageEma) * delta_ema_ + kCoverageEma * batch_delta / static_cast<double>(live);
  factor_valid_ = false;
}

// Features of new keys and moved embeddings: from the prediction where it computed them for the
// same embedding, else computed in one block.
void FastEngine::compute_fresh_features(const KeyStore& store, const PredictionBasis* reusable) {
  const bool reuse = reusable != nullptr && reusable->inducing_id == id_;
  if (reuse) {
    reusable_of_row_.assign(reusable->keys.size(), -1);
    for (size_t i = 0; i < reusable->feature_rows.size(); ++i)
      reusable_of_row_[reusable->feature_rows[i]] = static_cast<int64_t>(i);
  }
  block_slots_.clear();
  for (const Update& up : updates_) {
    if (!up.live || !up.needs_phi) continue;
    save_features(up.slot);
    const int64_t index = reuse ? reusable_of_row_[up.row] : -1;
    if (index >= 0 && same_row(&reusable->feature_embeddings[index * dim_], store.embedding(up.slot), dim_)) {
      std::copy_n(&reusable->features[index * m_], m_, phi(up.slot));
    } else {
      block_slots_.push_back(up.slot);
    }
  }
  const auto fresh = static_cast<int64_t>(block_slots_.size());
  if (fresh == 0) return;
  double* pts = grow(block_rows_, fresh * dim_);
  double* sq = grow(block_norms_, fresh);
  gather_rows(store.embeddings(), store.squared_norms(), dim_, block_slots_.data(), fresh, pts, sq);
  double* out = grow(block_features_, fresh * m_);
  features(pts, sq, fresh, out);
  for (int64_t r = 0; r < fresh; ++r) std::copy_n(out + r * m_, m_, phi(block_slots_[r]));
}

bool FastEngine::coverage_lost(const KeyStore& store) const {
  const int64_t size = store.size();
  return size >= 2 * size_at_selection_ || (size_at_selection_ < config_.num_inducing && size > size_at_selection_) ||
         delta_ema_ > kCoverageFactor * delta_ref_ + kCoverageMargin * config_.signal_var;
}

void FastEngine::apply_staged() {
  if (changing_) {  // the lower triangle of S, c and e: everything the updates below write
    for (int64_t j = 0; j < m_; ++j) undo_.save(&s_info_(j, j), m_ - j);
    undo_.save(c_info_.data(), m_);
    undo_.save(e_info_.data(), m_);
  }
  apply_terms(relinearised_.rows.data(), relinearised_.terms.data(), relinearised_.size());
  apply_terms(updated_.rows.data(), updated_.terms.data(), updated_.size());
  factor_valid_ = false;
}

}  // namespace vipfast::gp
