// SuccessGP: the facade. It holds the mutex, validates each call, and orchestrates the key store,
// the two engines and the recalibration.
#include "vipfast/success_gp.hpp"
#include "vipfast/fail.hpp"
#include "vipfast/gp/exact_engine.hpp"
#include "vipfast/gp/fast_engine.hpp"
#include "vipfast/gp/kernel.hpp"
#include "vipfast/gp/key_store.hpp"
#include "vipfast/gp/quadrature.hpp"
#include "vipfast/gp/state_io.hpp"

#include <algorithm>
#include <cmath>

namespace vipfast {

using gp::grow;

namespace {

const SuccessGPConfig& validated(const SuccessGPConfig& config) {
  validate_config(config);
  return config;
}

// The fast engine serves a store of this size (in auto mode, once it outgrew the exact engine).
bool fast_mode(const SuccessGPConfig& config, int64_t stored) {
  return config.mode == GPMode::fast || (config.mode == GPMode::automatic && stored > config.auto_exact_max);
}

void check_counts(int64_t count, const double* successes, const int64_t* trials) {
  if (count < 0) fail("count must be >= 0, got ", count);
  for (int64_t i = 0; i < count; ++i) {
    if (trials[i] < 0) fail("trials[", i, "] = ", trials[i], " is negative");
    if (!std::isfinite(successes[i])) fail("successes[", i, "] = ", successes[i], " is not finite");
    if (successes[i] < 0) fail("successes[", i, "] = ", successes[i], " is negative");
    if (successes[i] > static_cast<double>(trials[i]))
      fail("successes[", i, "] = ", successes[i], " exceeds trials[", i, "] = ", trials[i]);
  }
}

// A prediction passed back to observe must be of these rows, and whole.
void check_prediction(const PredictionBasis& p, int64_t count, const uint64_t* keys, int64_t dim) {
  const auto rows = static_cast<int64_t>(p.keys.size());
  if (rows != count) fail("prediction has ", rows, " rows but observe got ", count);
  for (int64_t i = 0; i < count; ++i)
    if (p.keys[i] != keys[i])
      fail("prediction.keys[", i, "] = ", p.keys[i], " but keys[", i, "] = ", keys[i],
           ": the prediction was made for other keys");
  if (static_cast<int64_t>(p.latent_mean.size()) != count || static_cast<int64_t>(p.latent_var.size()) != count)
    fail("prediction's latent mean and variance must have ", count, " rows");
  const auto features = static_cast<int64_t>(p.feature_rows.size());
  for (int64_t r = 0; r < features; ++r)
    if (p.feature_rows[r] < 0 || p.feature_rows[r] >= count || (r > 0 && p.feature_rows[r] <= p.feature_rows[r - 1]))
      fail("prediction's feature rows must be ascending row indices in [0, ", count, ")");
  if (p.feature_width < 0 || static_cast<int64_t>(p.features.size()) != features * p.feature_width ||
      static_cast<int64_t>(p.feature_embeddings.size()) != features * dim)
    fail("prediction's features must have shape (", features, ", ", p.feature_width, ") and their embeddings (",
         features, ", ", dim, ")");
}

}  // namespace

SuccessGP::SuccessGP(const SuccessGPConfig& config)
    : config_(validated(config)),
      store_(std::make_unique<gp::KeyStore>(config_)),
      exact_(std::make_unique<gp::ExactEngine>(config_)),
      calibration_(config_.calibration_window),
      batch_(std::make_unique<gp::ObservedBatch>()) {}

SuccessGP::~SuccessGP() = default;

bool SuccessGP::fast_in_use() const { return fast_ != nullptr; }  // built only in fast mode, which lasts

// ---- predict ----------------------------------------------------------------------------------------

void SuccessGP::predict_latent(int64_t count, const uint64_t* keys, const double* rows, const double* sq,
                               double* mean, double* var, PredictionBasis* basis) {
  if (count == 0) return;
  if (store_->size() == 0) {
    std::fill_n(mean, count, store_->prior_mean());
    std::fill_n(var, count, config_.signal_var);
  } else if (fast_in_use()) {
    fast_->predict(*store_, count, keys, rows, sq, mean, var, basis);
  } else {
    exact_->predict(*store_, count, rows, sq, mean, var);
  }
}

Prediction SuccessGP::predict(int64_t count, const uint64_t* keys, const double* embeddings) {
  if (count < 0) fail("count must be >= 0, got ", count);
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t d = config_.dim;
  const auto n = static_cast<size_t>(count);
  double* rows = grow(rows_, count * d);
  double* sq = grow(squared_norms_, count);
  gp::normalise_rows(embeddings, count, d, rows, sq);
  Prediction out;
  PredictionBasis& basis = out.basis;
  basis.keys.assign(keys, keys + count);
  basis.latent_mean.resize(n);
  basis.latent_var.resize(n);
  predict_latent(count, keys, rows, sq, basis.latent_mean.data(), basis.latent_var.data(), &basis);
  out.mean = basis.latent_mean;
  out.var = basis.latent_var;
  calibration_.apply(count, out.mean.data(), out.var.data());
  out.proba.resize(n);
  out.weight.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const double mean = out.mean[i], var = out.var[i];
    out.proba[i] = config_.proba == ProbaMethod::moderated ? gp::moderated_sigmoid(mean, var) : gp::sigmoid(mean);
    out.weight[i] = gp::expected_bernoulli_variance(mean, var);
  }
  return out;
}

// ---- observe ----------------------------------------------------------------------------------------

void SuccessGP::observe(int64_t count, const uint64_t* keys, const double* embeddings, const double* successes,
                        const int64_t* trials, const PredictionBasis* prediction) {
  check_counts(count, successes, trials);
  std::lock_guard<std::mutex> lock(mutex_);
  if (prediction) check_prediction(*prediction, count, keys, config_.dim);
  if (count == 0) return;
  const int64_t d = config_.dim;
  double* rows = grow(rows_, count * d);
  double* sq = grow(squared_norms_, count);
  gp::normalise_rows(embeddings, count, d, rows, sq);  // validates them too: a rejected observe changes nothing
  gp::ObservedBatch& batch = *batch_;
  batch.rows = count;
  batch.keys = keys;
  batch.embeddings = rows;
  batch.squared_norms = sq;
  batch.merge(successes, trials);

  // What can fail numerically before anything changes: the prediction the calibration scores (the
  // plan's, or the one the model makes now, before these outcomes count) and the Laplace step's
  // posterior means at the stored keys.
  PredictionBasis own;
  const PredictionBasis* basis = prediction;
  std::optional<LogitCalibration> next_calibration;
  if (calibration_.enabled()) {
    if (!basis) {
      own.keys.assign(keys, keys + count);
      own.latent_mean.resize(static_cast<size_t>(count));
      own.latent_var.resize(static_cast<size_t>(count));
      predict_latent(count, keys, rows, sq, own.latent_mean.data(), own.latent_var.data(), &own);
      basis = &own;
    }
    next_calibration = calibration_.recorded(store_->step(), count, basis->latent_mean.data(),
                                             basis->latent_var.data(), successes, trials);
  }
  const bool relinearise = config_.noise == NoiseModel::laplace && store_->size() > 0;
  if (relinearise) {
    // One Newton step of the Laplace approximation, with the posterior the preceding prediction
    // already factored (docs/success_gp.md, "Laplace sites"). In the fast engine the point is the
    // inducing-point mean, which costs O(M) per key instead of a triangular solve.
    double* means = grow(stored_means_, store_->size());
    if (fast_in_use()) fast_->inducing_means(*store_, means);
    else exact_->predict(*store_, store_->size(), store_->embeddings(), store_->squared_norms(), means, nullptr);
  }
  commit_observe(relinearise, basis, next_calibration);
}

void SuccessGP::commit_observe(bool relinearise, const PredictionBasis* basis,
                               std::optional<LogitCalibration>& next_calibration) {
  store_->reserve(static_cast<int64_t>(batch_->first_row.size()));
  if (fast_) fast_->reserve(store_->slots());
  store_->begin_change();
  if (fast_) fast_->begin_change();
  // A rebuild replaces the engine (perhaps none): the one it replaced is kept until the change commits.
  bool rebuilt = false;
  std::unique_ptr<gp::FastEngine> replaced;
  try {
    if (relinearise) {
      moved_.clear();
      store_->relinearise(stored_means_.data(), moved_);
      if (fast_) fast_->restage_sites(*store_, moved_);
    }
    stage_completed(ObserveStage::relinearised);
    changes_.clear();
    store_->observe(*batch_, changes_);
    const bool lengthscale_changed = store_->refresh_lengthscale();
    stage_completed(ObserveStage::stored);
    if (fast_mode(config_, store_->size())) {
      bool rebuild = !fast_ || lengthscale_changed;
      if (!rebuild) {
        fast_->stage_changes(*store_, changes_, basis);
        rebuild = fast_->coverage_lost(*store_);
      }
      if (rebuild) {
        std::unique_ptr<gp::FastEngine> built = gp::FastEngine::build(config_, *store_);
        replaced = std::move(fast_);
        fast_ = std::move(built);
        rebuilt = true;
      } else {
        fast_->apply_staged();
      }
    }
    stage_completed(ObserveStage::engine_updated);
  } catch (...) {
    if (rebuilt) fast_ = std::move(replaced);
    if (fast_) fast_->rollback_change();
    store_->rollback_change();
    exact_->invalidate();
    throw;
  }
  store_->commit_change();
  if (fast_) fast_->commit_change();
  if (next_calibration) calibration_ = std::move(*next_calibration);
  exact_->invalidate();
  if (fast_) fast_->invalidate_factor();
}

void SuccessGP::stage_completed(ObserveStage stage) {
  if (injected_failure_ != stage) return;
  injected_failure_ = ObserveStage::none;
  numerical_failure("injected failure (a test of observe's rollback)");
}

void SuccessGP::inject_failure_after(ObserveStage stage) {
  std::lock_guard<std::mutex> lock(mutex_);
  injected_failure_ = stage;
}

// ---- advance, inspection ------------------------------------------------------------------------------

void SuccessGP::advance(int64_t steps) {
  std::lock_guard<std::mutex> lock(mutex_);
  store_->advance(steps);
  if (steps == 0) return;
  if (fast_ && config_.forgetting != 1.0) fast_->advance(store_->decay(steps));
  exact_->invalidate();
}

int64_t SuccessGP::num_stored() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return store_->size();
}

int64_t SuccessGP::step() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return store_->step();
}

double SuccessGP::lengthscale() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return store_->lengthscale();
}

double SuccessGP::prior_mean() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return store_->prior_mean();
}

GPMode SuccessGP::active_mode() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return fast_in_use() ? GPMode::fast : GPMode::exact;
}

int64_t SuccessGP::num_inducing_used() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return fast_ ? fast_->num_inducing() : 0;
}

void SuccessGP::stored_sites(int64_t count, const uint64_t* keys, double* precision, double* target) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t slot = store_->find(keys[i]);
    precision[i] = slot < 0 ? 0.0 : store_->record(slot).precision * store_->weight(slot);
    target[i] = slot < 0 ? 0.0 : store_->record(slot).target;
  }
}

PseudoObservations SuccessGP::pseudo_observations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return store_->pseudo_observations();
}

std::pair<double, double> SuccessGP::calibration() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {calibration_.offset(), std::exp(calibration_.log_scale())};
}

// ---- state ----------------------------------------------------------------------------------------------

GPState SuccessGP::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  gp::SavedGP saved;
  saved.config = config_;
  store_->save(saved.store);
  if (fast_) fast_->save(*store_, saved.fast);
  saved.calibration.offset = calibration_.offset();
  saved.calibration.log_scale = calibration_.log_scale();
  for (const LogitCalibration::Record& r : calibration_.records()) {
    saved.calibration.record_steps.push_back(r.step);
    saved.calibration.records.insert(saved.calibration.records.end(), {r.mean, r.var, r.successes, r.trials});
  }
  return gp::write_state(saved);
}

std::unique_ptr<SuccessGP> SuccessGP::from_state(const GPState& state) {
  const gp::SavedGP saved = gp::read_state(state);
  auto model = std::make_unique<SuccessGP>(saved.config);
  SuccessGP& g = *model;
  g.store_->restore(saved.store);
  const int64_t m = saved.fast.num_inducing_used, n = g.store_->size();
  const bool fast = fast_mode(saved.config, n);
  if (m > 0 && n == 0) fail("state has inducing points but no stored keys");
  if (m > 0 && !fast) fail("state has fast-mode sums but mode '", gp_mode_name(saved.config.mode), "' would not use them");
  if (m == 0 && n > 0 && fast) fail("state stores keys in fast mode but has no inducing points");
  if (m > 0)
    g.fast_ = gp::FastEngine::restore(saved.config, *g.store_, saved.fast, saved.format_version < kSuccessGPStateVersion);
  const gp::SavedCalibration& c = saved.calibration;
  std::vector<LogitCalibration::Record> records(c.record_steps.size());
  for (size_t i = 0; i < records.size(); ++i) {
    if (c.record_steps[i] > g.store_->step())
      fail("state['calibration_record_steps'][", i, "] = ", c.record_steps[i], " is after step ", g.store_->step());
    const double* values = &c.records[i * 4];
    records[i] = {c.record_steps[i], values[0], values[1], values[2], values[3]};
  }
  g.calibration_.restore(c.offset, c.log_scale, std::move(records));
  return model;
}

}  // namespace vipfast
