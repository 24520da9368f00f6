// The fast engine: FITC (Snelson & Ghahramani 2006) with M inducing points Z, in information form
// over whitened features phi(x) = L_mm^-1 k_m(x). Key i contributes a site of precision
// site_i = tau_i / (1 + tau_i delta_i) (its noise plus its residual variance delta_i) on
// v = L_mm^-1 u ~ N(0, I); the engine keeps S = sum decayed site phi phi^T, c = sum decayed site y phi
// and e = sum decayed site phi, so the posterior is v ~ N(P^-1 (c - mu0 e), P^-1), P = I + S.
// It reads the key store and owns everything derived from Z: features, sites, sums and the
// factor of P.
#pragma once

#include "vipfast/gp/inducing_points.hpp"
#include "vipfast/gp/key_store.hpp"
#include "vipfast/gp/saved_state.hpp"
#include "vipfast/gp/undo_log.hpp"
#include "vipfast/success_gp.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <memory>
#include <vector>

namespace vipfast::gp {

class FastEngine {
 public:
  // The engine on the stored keys: inducing points from them, every key's features and site, the sums.
  static std::unique_ptr<FastEngine> build(const SuccessGPConfig& config, const KeyStore& store);
  // Versions 1 and 2 could save information sums whose diagonal a rounding error had taken below 0;
  // such a `legacy` state's sums are summed again from its features and sites.
  static std::unique_ptr<FastEngine> restore(const SuccessGPConfig& config, const KeyStore& store,
                                             const SavedFastEngine& saved, bool legacy);
  void save(const KeyStore& store, SavedFastEngine& saved) const;

  int64_t num_inducing() const { return m_; }
  uint64_t inducing_id() const { return id_; }

  // Posterior mean and variance of f at `count` unit rows. A stored key predicted at its own
  // embedding gets FITC's residual correction. The features it computes go to `basis`, if given.
  void predict(const KeyStore& store, int64_t count, const uint64_t* keys, const double* rows, const double* sq,
               double* mean, double* var, PredictionBasis* basis);
  // mu0 + phi^T P^-1 h at every stored key, without the residual correction (Laplace linearisation points).
  void inducing_means(const KeyStore& store, double* means);

  // An observe, in order: reserve, begin_change, restage_sites (Laplace step), stage_changes (the
  // store's changes), then apply_staged unless coverage_lost calls for a rebuild; then commit or
  // roll back. The sums change only in apply_staged.
  void reserve(int64_t slots);
  void begin_change();
  void commit_change() noexcept;
  void rollback_change() noexcept;
  void restage_sites(const KeyStore& store, const std::vector<RelinearisedSite>& moved);
  // `reusable`: a prediction of the batch's rows, whose features are used where the embedding matches.
  void stage_changes(const KeyStore& store, const std::vector<StoreChange>& changes, const PredictionBasis* reusable);
  // All evidence aged by forgetting weight g.
  void advance(double g);
  bool coverage_lost(const KeyStore& store) const;
  void apply_staged();
  void invalidate_factor() { factor_valid_ = false; }

 private:
  // One term of an update of the sums: S += w phi phi^T, c += cy phi, e += ce phi.
  struct Term {
    double w, cy, ce;
  };
  // A batch of terms with their feature rows (row-major, stride m).
  struct Terms {
    std::vector<Term> terms;
    std::vector<double> rows;
    void clear() { terms.clear(); }
    int64_t size() const { return static_cast<int64_t>(terms.size()); }
    void add(const double* phi, int64_t m, Term term);
  };
  // A stored key this observe added evidence to.
  struct Update {
    int64_t slot;
    int64_t row;      // its batch row
    bool needs_phi;   // new key or new embedding
    bool live;        // false once evicted again within the same observe
    bool merge;       // re-observed with the same embedding: net change on the same phi
    double old_weight, old_target;
  };

  FastEngine(const SuccessGPConfig& config, InducingPoints z);
  void factor_inducing_kernel();
  void check_consistency(const KeyStore& store);
  void features(const double* rows, const double* sq, int64_t count, double* out);
  double residual_variance(const double* phi) const;
  double site_weight(const KeyStore& store, int64_t slot) const { return site_[slot] * store.weight(slot); }
  void set_site(const KeyStore& store, int64_t slot);
  void resum_information(const KeyStore& store);
  void apply_terms(const double* rows, const Term* terms, int64_t count);
  void rank_update(const double* a, int64_t rows, double sign);
  void factor(const KeyStore& store);
  void compute_fresh_features(const KeyStore& store, const PredictionBasis* reusable);
  void save_site(int64_t slot);
  void save_features(int64_t slot);
  double* phi(int64_t slot) { return phi_.data() + slot * m_; }
  const double* phi(int64_t slot) const { return phi_.data() + slot * m_; }

  const SuccessGPConfig config_;
  const int64_t dim_;
  const int64_t m_;
  const uint64_t id_;           // unique to this inducing set in this process (and most likely any other)
  std::vector<double> z_, z_sq_;  // (m, dim), (m)
  double lengthscale_;
  Eigen::MatrixXd l_mm_;        // (m, m) chol(K_mm), lower
  int64_t slots_ = 0;
  std::vector<double> phi_;     // (slots, m)
  std::vector<double> delta_;   // (slots) residual variance
  std::vector<double> site_;    // (slots) FITC site precision at the key's observation step
  Eigen::MatrixXd s_info_;      // (m, m) lower
  Eigen::VectorXd c_info_, e_info_;
  double delta_ref_ = 0.0, delta_ema_ = 0.0;
  int64_t size_at_selection_ = 0;

  // The factor P = I + S = R R^T and the mean P^-1 h for the next prediction.
  Eigen::MatrixXd p_chol_;
  Eigen::VectorXd p_mean_;
  double prior_mean_ = 0.0;
  bool factor_valid_ = false;

  // The change in progress.
  bool changing_ = false;
  UndoLog undo_;
  Terms relinearised_, updated_;  // staged terms: applied in this order
  std::vector<Update> updates_;
  std::vector<int64_t> update_of_slot_;  // (slots) index in updates_ during stage_changes, else -1
  std::vector<int64_t> reusable_of_row_; // (rows) index of a row's reusable features, else -1

  // Scratch (grow-only).
  std::vector<double> block_rows_, block_norms_, block_features_;  // rows whose features are computed
  std::vector<int64_t> block_slots_;
  std::vector<double> query_features_, query_whitened_;
  std::vector<int64_t> query_slot_;
  std::vector<double> term_cy_, term_ce_, positive_rows_, negative_rows_;
  Eigen::MatrixXd s_half_;  // the second thread's share of a rank update
};

}  // namespace vipfast::gp
