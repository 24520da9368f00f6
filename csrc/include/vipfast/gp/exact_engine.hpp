// The exact engine: the dense float64 GP on the stored keys (the reference), in the form of
// Rasmussen & Williams Alg. 3.2, B = I + T^1/2 K T^1/2 = L L^T, alpha = T^1/2 B^-1 T^1/2 (y - mu0),
// which stays well-posed as precisions decay to 0. Its factor is derived from the store alone
// and rebuilt at the first prediction after any change.
#pragma once

#include "vipfast/gp/key_store.hpp"
#include "vipfast/success_gp.hpp"

#include <cstdint>
#include <vector>

namespace vipfast::gp {

class ExactEngine {
 public:
  explicit ExactEngine(const SuccessGPConfig& config) : config_(config) {}

  void invalidate() { valid_ = false; }
  // Posterior mean and variance of f at `count` unit rows (squared norms `sq`); `var` may be null:
  // the mean alone skips the triangular solve.
  void predict(const KeyStore& store, int64_t count, const double* rows, const double* sq, double* mean, double* var);

 private:
  void factor(const KeyStore& store);

  const SuccessGPConfig config_;
  bool valid_ = false;
  double prior_mean_ = 0.0;
  std::vector<double> chol_;            // (n, n) column-major, lower: chol(B)
  std::vector<double> sqrt_precision_;  // (n) T^1/2
  std::vector<double> alpha_;           // (n)
  std::vector<double> query_kernel_;    // (count, n) scratch
};

}  // namespace vipfast::gp
