#include "vipfast/gp/kernel.hpp"
#include "vipfast/fail.hpp"

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

void normalise_rows(const double* in, int64_t rows, int64_t d, double* out, double* sq) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* x = in + r * d;
    double scale = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      if (!std::isfinite(x[j])) fail("embeddings[", r, ", ", j, "] is ", x[j], "; embeddings must be finite");
      scale = std::max(scale, std::abs(x[j]));
    }
    if (scale == 0.0) fail("embeddings[", r, "] is all zeros and cannot be L2-normalised");
    double* y = out + r * d;
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      y[j] = x[j] / scale;
      ss += y[j] * y[j];
    }
    const double norm = std::sqrt(ss);
    for (int64_t j = 0; j < d; ++j) y[j] /= norm;
    sq[r] = sum_squares(y, d);
  }
}

void gather_rows(const double* rows, const double* sq, int64_t d, const int64_t* index, int64_t count,
                 double* out, double* out_sq) {
  for (int64_t r = 0; r < count; ++r) {
    std::copy_n(rows + index[r] * d, d, out + r * d);
    out_sq[r] = sq[index[r]];
  }
}

}  // namespace vipfast::gp
