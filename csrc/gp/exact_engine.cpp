#include "vipfast/gp/exact_engine.hpp"
#include "vipfast/fail.hpp"
#include "vipfast/gp/kernel.hpp"
#include "vipfast/gp/parallel.hpp"

#include <Eigen/Cholesky>

#include <cmath>

namespace vipfast::gp {

void ExactEngine::factor(const KeyStore& store) {
  const int64_t n = store.size(), d = config_.dim;
  const double ell = store.lengthscale();
  prior_mean_ = store.prior_mean();
  double* l = grow(chol_, n * n);
  double* root = grow(sqrt_precision_, n);
  double* alpha = grow(alpha_, n);
  for (int64_t i = 0; i < n; ++i) root[i] = std::sqrt(store.record(i).precision * store.weight(i));
  // K is recomputed in full (a symmetric rank-d update), never patched: each entry's bits then
  // depend only on the stored set, which the bitwise state round trip requires.
  ColMap b(l, n, n);
  b.triangularView<Eigen::Lower>().setZero();
  b.selfadjointView<Eigen::Lower>().rankUpdate(ConstRowMap(store.embeddings(), n, d));
  const double scale = -0.5 / (ell * ell);
  const ConstVecMap sq(store.squared_norms(), n), rt(root, n);
  for (int64_t j = 0; j < n; ++j) {
    auto col = b.col(j).tail(n - j).array();
    col = ((sq.tail(n - j).array() + sq[j] - 2.0 * col).max(0.0) * scale).exp() * (config_.signal_var * root[j]) *
          rt.tail(n - j).array();
    b(j, j) += 1.0;
  }
  Eigen::Ref<Eigen::MatrixXd> ref(b);
  Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(ref);
  if (llt.info() != Eigen::Success || !b.diagonal().allFinite())
    numerical_failure("the exact engine's matrix I + T^1/2 K T^1/2 is not positive definite");
  VecMap a(alpha, n);
  for (int64_t i = 0; i < n; ++i) a[i] = root[i] * (store.record(i).target - prior_mean_);
  b.triangularView<Eigen::Lower>().solveInPlace(a);
  b.triangularView<Eigen::Lower>().transpose().solveInPlace(a);
  a.array() *= rt.array();
  valid_ = true;
}

void ExactEngine::predict(const KeyStore& store, int64_t count, const double* x, const double* xs, double* mean,
                          double* var) {
  const int64_t n = store.size(), d = config_.dim;
  if (!valid_) factor(store);
  const double ell = store.lengthscale();
  double* k = grow(query_kernel_, count * n);
  split_rows(count, [&](int64_t begin, int64_t end) {
    const int64_t rows = end - begin;
    double* kb = k + begin * n;
    RowMap kq(kb, rows, n);
    kq.noalias() = ConstRowMap(x + begin * d, rows, d) * ConstRowMap(store.embeddings(), n, d).transpose();
    gram_to_kernel(kb, rows, n, xs + begin, store.squared_norms(), config_.signal_var, ell);
    VecMap(mean + begin, rows).noalias() = kq * ConstVecMap(alpha_.data(), n);
    if (!var) return;
    ColMap v(kb, n, rows);  // the same buffer read as K_*^T
    v.array().colwise() *= ConstVecMap(sqrt_precision_.data(), n).array();
    ColMap(chol_.data(), n, n).triangularView<Eigen::Lower>().solveInPlace(v);
  });
  for (int64_t i = 0; i < count; ++i) {
    mean[i] += prior_mean_;
    if (var) var[i] = std::max(0.0, config_.signal_var - sum_squares(k + i * n, n));
  }
}

}  // namespace vipfast::gp
