#include "vipfast/gp/inducing_points.hpp"
#include "vipfast/gp/kernel.hpp"
#include "vipfast/gp/parallel.hpp"

#include <algorithm>
#include <cmath>

namespace vipfast::gp {
namespace {

constexpr int kLloydIterations = 10;
constexpr double kPivotTolerance = 1e-6;

void lloyd(const double* pts, int64_t pool, int64_t d, std::vector<double>& centres, std::vector<double>& centre_sq,
           int64_t count) {
  std::vector<double> gram(static_cast<size_t>(pool * count));
  std::vector<int64_t> assign(static_cast<size_t>(pool), -1), members(static_cast<size_t>(count));
  std::vector<double> sums(static_cast<size_t>(count * d));
  double* g = gram.data();
  for (int iteration = 0; iteration < kLloydIterations; ++iteration) {
    split_rows(pool, [&](int64_t begin, int64_t end) {
      RowMap(g + begin * count, end - begin, count).noalias() =
          ConstRowMap(pts + begin * d, end - begin, d) * ConstRowMap(centres.data(), count, d).transpose();
    });
    bool changed = false;
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(members.begin(), members.end(), 0);
    for (int64_t i = 0; i < pool; ++i) {  // nearest centre: max x.c - |c|^2/2
      int64_t best = 0;
      double best_score = -kInf;
      for (int64_t k = 0; k < count; ++k) {
        const double score = g[i * count + k] - 0.5 * centre_sq[k];
        if (score > best_score) {
          best_score = score;
          best = k;
        }
      }
      changed |= assign[i] != best;
      assign[i] = best;
      ++members[best];
      double* s = &sums[best * d];
      const double* p = pts + i * d;
      for (int64_t j = 0; j < d; ++j) s[j] += p[j];
    }
    if (!changed) break;
    for (int64_t k = 0; k < count; ++k) {
      if (members[k] == 0) continue;  // an empty cluster keeps its centre
      for (int64_t j = 0; j < d; ++j) centres[k * d + j] = sums[k * d + j] / static_cast<double>(members[k]);
      centre_sq[k] = sum_squares(&centres[k * d], d);
    }
  }
}

// Greedy pivoted Cholesky on K(centres, centres): the indices of the best-conditioned subset.
std::vector<int64_t> well_conditioned_subset(const std::vector<double>& centres, const std::vector<double>& centre_sq,
                                             int64_t count, int64_t d, double signal_var, double lengthscale) {
  RowMatrix kcc(count, count);
  kcc.noalias() = ConstRowMap(centres.data(), count, d) * ConstRowMap(centres.data(), count, d).transpose();
  gram_to_kernel(kcc.data(), count, count, centre_sq.data(), centre_sq.data(), signal_var, lengthscale);
  Eigen::MatrixXd factor = Eigen::MatrixXd::Zero(count, count);
  Eigen::VectorXd resid = kcc.diagonal();
  std::vector<int64_t> chosen;
  for (int64_t k = 0; k < count; ++k) {
    Eigen::Index pivot;
    const double best = resid.maxCoeff(&pivot);
    if (!(best > kPivotTolerance * signal_var)) break;
    Eigen::VectorXd col = kcc.row(pivot).transpose();
    if (k > 0) col.noalias() -= factor.leftCols(k) * factor.row(pivot).leftCols(k).transpose();
    factor.col(k) = col / std::sqrt(best);
    resid.array() -= factor.col(k).array().square();
    resid[pivot] = 0.0;
    chosen.push_back(pivot);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace

InducingPoints select_inducing_points(const double* pts, const double* sq, int64_t pool, int64_t d, int64_t target,
                                      double signal_var, double lengthscale) {
  std::vector<double> centres(static_cast<size_t>(target * d)), centre_sq(static_cast<size_t>(target));
  for (int64_t k = 0; k < target; ++k) {
    const int64_t j = k * pool / target;
    std::copy_n(pts + j * d, d, &centres[k * d]);
    centre_sq[k] = sq[j];
  }
  lloyd(pts, pool, d, centres, centre_sq, target);
  const std::vector<int64_t> chosen = well_conditioned_subset(centres, centre_sq, target, d, signal_var, lengthscale);
  InducingPoints z;
  z.count = static_cast<int64_t>(chosen.size());
  z.points.resize(static_cast<size_t>(z.count * d));
  z.squared_norms.resize(static_cast<size_t>(z.count));
  for (int64_t k = 0; k < z.count; ++k) {
    std::copy_n(&centres[chosen[k] * d], d, &z.points[k * d]);
    z.squared_norms[k] = centre_sq[chosen[k]];
  }
  return z;
}

}  // namespace vipfast::gp
