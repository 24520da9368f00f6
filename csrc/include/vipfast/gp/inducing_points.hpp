// Inducing points of the fast engine, chosen from a pool of stored embeddings.
#pragma once

#include <cstdint>
#include <vector>

namespace vipfast::gp {

struct InducingPoints {
  int64_t count = 0;                   // m
  std::vector<double> points;          // (m, dim)
  std::vector<double> squared_norms;   // (m)
};

// k-means centroids of the pool (Lloyd from strided seeds, at most `target` of them), then a
// pivoted Cholesky over the centroids' kernel drops near-duplicates. Centroids summarise a
// cluster without any one prompt's own direction, so the Nystrom part keeps more of the shared
// covariance than sampled points do (docs/success_gp.md has the comparison).
InducingPoints select_inducing_points(const double* pool, const double* pool_sq, int64_t pool_size, int64_t dim,
                                      int64_t target, double signal_var, double lengthscale);

}  // namespace vipfast::gp
