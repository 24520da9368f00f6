#include "vipfast/gp/kernel.hpp"
#include "vipfast/fail.hpp"
#include "vipfast/cpu.hpp"
#include "vipfast/gp/gram_avx2.hpp"

#include <cmath>

namespace vipfast::gp {

void gram_to_kernel(double* gram, int64_t rows, int64_t cols, const double* a_sq, const double* b_sq,
                    double signal_var, double lengthscale) {
  const double scale = -0.5 / (lengthscale * lengthscale);
  const ConstVecMap b(b_sq, cols);
  for (int64_t i = 0; i < rows; ++i) {
    VecMap row(gram + i * cols, cols);
    row = ((b.array() + a_sq[i] - 2.0 * row.array()).max(0.0) * scale).exp() * signal_var;
  }
}

namespace {

constexpr double kLargest = std::numeric_limits<double>::max();

// The largest |x_j|, or NaN when some x_j is not finite; four running maxima, as in sum_squares.
double max_abs(const double* x, int64_t d) {
  double m0 = 0.0, m1 = 0.0, m2 = 0.0, m3 = 0.0;
  bool finite = true;
  int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
    const double a0 = std::abs(x[j]), a1 = std::abs(x[j + 1]), a2 = std::abs(x[j + 2]), a3 = std::abs(x[j + 3]);
    finite &= (a0 <= kLargest) & (a1 <= kLargest) & (a2 <= kLargest) & (a3 <= kLargest);
    m0 = std::max(m0, a0);
    m1 = std::max(m1, a1);
    m2 = std::max(m2, a2);
    m3 = std::max(m3, a3);
  }
  for (; j < d; ++j) {
    const double a = std::abs(x[j]);
    finite &= a <= kLargest;
    m0 = std::max(m0, a);
  }
  return finite ? std::max(std::max(m0, m1), std::max(m2, m3)) : kNaN;
}

}  // namespace

void normalise_rows(const double* in, int64_t rows, int64_t d, double* out, double* sq) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* x = in + r * d;
    const double scale = max_abs(x, d);
    if (std::isnan(scale))
      for (int64_t j = 0; j < d; ++j)
        if (!std::isfinite(x[j])) fail("embeddings[", r, ", ", j, "] is ", x[j], "; embeddings must be finite");
    if (scale == 0.0) fail("embeddings[", r, "] is all zeros and cannot be L2-normalised");
    // One left-to-right sum here: a stored row is recognised by its bits, so the normalised rows must
    // keep the bits that states saved by earlier versions hold. (Dividing by scale first: no overflow.)
    double* y = out + r * d;
    for (int64_t j = 0; j < d; ++j) y[j] = x[j] / scale;  // apart from the sum, so that it vectorises
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += y[j] * y[j];
    const double norm = std::sqrt(ss);
    for (int64_t j = 0; j < d; ++j) y[j] /= norm;
    sq[r] = sum_squares(y, d);
  }
}

void cross_gram(const double* x, int64_t rows, const double* z, int64_t m, int64_t d, double* out) {
  if (avx2_kernels_enabled()) {
    gram_avx2(x, rows, z, m, d, out);
    return;
  }
  RowMap(out, rows, m).noalias() = ConstRowMap(x, rows, d) * ConstRowMap(z, m, d).transpose();
}

void gather_rows(const double* rows, const double* sq, int64_t d, const int64_t* index, int64_t count,
                 double* out, double* out_sq) {
  for (int64_t r = 0; r < count; ++r) {
    std::copy_n(rows + index[r] * d, d, out + r * d);
    out_sq[r] = sq[index[r]];
  }
}

}  // namespace vipfast::gp
