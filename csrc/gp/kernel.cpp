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

namespace {

// The largest |x_j|, or NaN when some x_j is not finite; four running maxima, as in sum_squares.
double max_abs(const double* x, int64_t d) {
  double m[4] = {0.0, 0.0, 0.0, 0.0};
  bool finite = true;
  for (int64_t j = 0; j < d; ++j) {
    const double a = std::abs(x[j]);
    finite &= a <= std::numeric_limits<double>::max();
    m[j % 4] = std::max(m[j % 4], a);
  }
  return finite ? std::max(std::max(m[0], m[1]), std::max(m[2], m[3])) : kNaN;
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
