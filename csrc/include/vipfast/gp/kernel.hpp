// The RBF kernel on L2-normalised embeddings, and the small array helpers the GP objects share.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace vipfast::gp {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMap = Eigen::Map<RowMatrix>;
using ConstRowMap = Eigen::Map<const RowMatrix>;
using ColMap = Eigen::Map<Eigen::MatrixXd>;
using VecMap = Eigen::Map<Eigen::VectorXd>;
using ConstVecMap = Eigen::Map<const Eigen::VectorXd>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
// Below this the kernel's -1/(2 l^2) overflows to -inf and 0 * inf turns K(x, x) into NaN; on unit
// vectors (distances <= 2) no useful lengthscale is anywhere near it.
constexpr double kMinLengthscale = 1e-100;

// Grow-only scratch: buffers never shrink, so steady-state steps allocate nothing (fresh
// multi-megabyte allocations page-fault on every call on this class of VM).
template <class T>
T* grow(std::vector<T>& buffer, int64_t size) {
  const auto wanted = static_cast<size_t>(std::max<int64_t>(size, 1));
  if (buffer.size() < wanted) buffer.resize(std::max(wanted, buffer.size() + buffer.size() / 2));
  return buffer.data();
}

// Four running sums, of the entries j mod 4, added in a fixed order: the same bits wherever the row
// lives (a vectorised reduction's order would depend on alignment, and state round trips rely on
// this), with four additions in flight instead of one.
inline double sum_squares(const double* x, int64_t n) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += x[j] * x[j];
    s1 += x[j + 1] * x[j + 1];
    s2 += x[j + 2] * x[j + 2];
    s3 += x[j + 3] * x[j + 3];
  }
  for (; j < n; ++j) s0 += x[j] * x[j];
  return (s0 + s1) + (s2 + s3);
}

// out (rows × m, row-major) = X Zᵀ for row-major X (rows × d) and Z (m × d): with AVX2 and FMA where
// the CPU has them (an entry's bits then depend on its two rows alone), else Eigen's product.
void cross_gram(const double* x, int64_t rows, const double* z, int64_t m, int64_t d, double* out);

inline bool same_row(const double* a, const double* b, int64_t d) {
  return std::memcmp(a, b, sizeof(double) * static_cast<size_t>(d)) == 0;
}

// In place on a (rows, cols) row-major Gram block G = A B^T of unit-ish rows:
// K = signal_var * exp(-max(0, |a|^2 + |b|^2 - 2 G) / (2 l^2)).
void gram_to_kernel(double* gram, int64_t rows, int64_t cols, const double* a_sq, const double* b_sq,
                    double signal_var, double lengthscale);

// Writes the unit rows of `in` (rows, d) to `out` and their squared norms to `sq`; rejects NaN,
// inf and zero rows naming the entry.
void normalise_rows(const double* in, int64_t rows, int64_t d, double* out, double* sq);

// Copies rows `index` (count) of `rows` (stride d) and their squared norms, contiguously.
void gather_rows(const double* rows, const double* sq, int64_t d, const int64_t* index, int64_t count,
                 double* out, double* out_sq);

}  // namespace vipfast::gp
