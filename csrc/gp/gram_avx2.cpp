// X Zᵀ, the dot products behind the GP's kernel, four lanes at a time with AVX2 and FMA when the CPU
// has them: the portable build targets SSE2, where Eigen's product runs two lanes without FMA, and
// this product is most of a dataset-scale prediction. Every entry is computed the same way wherever
// it lies in the blocks and in memory (four lane sums over d in order, added pairwise, then the last
// d mod 4 terms), so its bits depend only on the two rows.
#include <cstdint>

#include "vipfast/gp/gram_avx2.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define VIPFAST_HAVE_GRAM_AVX2 1
#endif

namespace vipfast::gp {
namespace {

#ifdef VIPFAST_HAVE_GRAM_AVX2

__attribute__((target("avx2,fma"))) inline double lane_sum(__m256d v) {
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, v);
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

// The entries of `kRows` rows of X against `kCols` rows of Z; kRows * kCols accumulators.
template <int kRows, int kCols>
__attribute__((target("avx2,fma"))) void block(const double* x, const double* z, int64_t d, int64_t m, double* out) {
  __m256d acc[kRows][kCols];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) acc[r][c] = _mm256_setzero_pd();
  const int64_t body = d / 4 * 4;
  for (int64_t k = 0; k < body; k += 4) {
    __m256d xs[kRows];
    for (int r = 0; r < kRows; ++r) xs[r] = _mm256_loadu_pd(x + r * d + k);
    for (int c = 0; c < kCols; ++c) {
      const __m256d zc = _mm256_loadu_pd(z + c * d + k);
      for (int r = 0; r < kRows; ++r) acc[r][c] = _mm256_fmadd_pd(xs[r], zc, acc[r][c]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) {
      double sum = lane_sum(acc[r][c]);
      for (int64_t k = body; k < d; ++k) sum += x[r * d + k] * z[c * d + k];
      out[r * m + c] = sum;
    }
}

template <int kRows>
__attribute__((target("avx2,fma"))) void row_block(const double* x, const double* z, int64_t d, int64_t m,
                                                   double* out) {
  int64_t j = 0;
  for (; j + 4 <= m; j += 4) block<kRows, 4>(x, z + j * d, d, m, out + j);
  for (; j < m; ++j) block<kRows, 1>(x, z + j * d, d, m, out + j);
}

#endif

}  // namespace

void gram_avx2(const double* x, int64_t rows, const double* z, int64_t m, int64_t d, double* out) {
#ifdef VIPFAST_HAVE_GRAM_AVX2
  int64_t i = 0;
  for (; i + 3 <= rows; i += 3) row_block<3>(x + i * d, z, d, m, out + i * m);
  for (; i < rows; ++i) row_block<1>(x + i * d, z, d, m, out + i * m);
#else
  (void)x, (void)rows, (void)z, (void)m, (void)d, (void)out;
#endif
}

}  // namespace vipfast::gp
