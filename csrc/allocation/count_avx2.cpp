// The shared model's pass over all prompts, four at a time with AVX2 when the CPU has it: the
// portable build targets SSE2, where this pass runs one prompt at a time. The unit gains are
// loaded one by one: AVX2's gather instruction is slower than separate loads on AMD Zen 2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "internal.hpp"
#include "vipfast/cpu.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define VIPFAST_HAVE_AVX2_KERNEL 1
#endif

namespace vipfast::allocation {

#ifdef VIPFAST_HAVE_AVX2_KERNEL

bool guessed_counts_available() { return avx2_kernels_enabled(); }

namespace {

template <bool kBend>
__attribute__((target("avx2"))) int64_t count_blocks(const GuessedCounts& in, std::vector<int64_t>& off) {
  const __m256d inverse_root = _mm256_set1_pd(in.inverse_root), alpha = _mm256_set1_pd(in.alpha);
  const __m256d beta = _mm256_set1_pd(in.beta), gamma = _mm256_set1_pd(in.gamma), one = _mm256_set1_pd(1.0);
  const __m256d top = _mm256_set1_pd(static_cast<double>(in.cap)), minus_one = _mm256_set1_pd(-1.0);
  const __m256d lambda = _mm256_set1_pd(in.lambda);
  const __m128i zero = _mm_setzero_si128();
  // A guess at the cap below steps is checked against its next gain like any other (and is off if
  // the count is higher); the cap stays below 2^31 - 1, so the comparison holds for larger steps too.
  const __m128i steps = _mm_set1_epi32(static_cast<int>(std::min<int64_t>(in.steps, INT32_MAX)));
  const __m256i min_rollouts = _mm256_set1_epi64x(in.min_rollouts);
  __m256i total = _mm256_setzero_si256();
  const int64_t end = in.num_prompts / 16 * 16;
  __m256d most_left = _mm256_set1_pd(-INFINITY), least_taken = _mm256_set1_pd(INFINITY);
  for (int64_t q = 0; q < end; q += 4) {
    const __m256d x = _mm256_mul_pd(_mm256_loadu_pd(in.roots + q), inverse_root);
    __m256d guess = _mm256_add_pd(_mm256_mul_pd(alpha, x), beta);
    if constexpr (kBend) {  // 1 / (x + 1) to 12 bits is plenty for the guess's last term
      const __m256d bend = _mm256_cvtps_pd(_mm_rcp_ps(_mm256_cvtpd_ps(_mm256_add_pd(x, one))));
      guess = _mm256_add_pd(guess, _mm256_mul_pd(gamma, bend));
    }
    guess = _mm256_max_pd(_mm256_min_pd(guess, top), minus_one);
    const __m128i count = _mm_max_epi32(_mm256_cvttpd_epi32(guess), zero);
    alignas(16) int32_t at[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(at), count);
    const double* u = in.unit_gains;
    const __m256d w = _mm256_loadu_pd(in.weights + q);
    const __m256d first_left = _mm256_mul_pd(w, _mm256_set_pd(u[at[3]], u[at[2]], u[at[1]], u[at[0]]));
    const __m256d last_taken = _mm256_mul_pd(w, _mm256_set_pd(u[at[3] - 1], u[at[2] - 1], u[at[1] - 1], u[at[0] - 1]));
    // Off when a unit left out beats lambda, or a unit taken does not.
    const __m256d below_top = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmplt_epi32(count, steps)));
    const __m256d above_zero = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmpgt_epi32(count, zero)));
    const __m256d too_few = _mm256_and_pd(_mm256_cmp_pd(first_left, lambda, _CMP_GT_OQ), below_top);
    const __m256d too_many = _mm256_and_pd(_mm256_cmp_pd(last_taken, lambda, _CMP_NGT_UQ), above_zero);
    const __m256i wide = _mm256_cvtepi32_epi64(count);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(in.counts + q), _mm256_add_epi64(wide, min_rollouts));
    // At either end of the range no unit is there: -inf and +inf, which no multiplier passes.
    const __m256d left = _mm256_blendv_pd(_mm256_set1_pd(-INFINITY), first_left, below_top);
    const __m256d taken = _mm256_blendv_pd(_mm256_set1_pd(INFINITY), last_taken, above_zero);
    _mm256_storeu_pd(in.first_left + q, left);
    _mm256_storeu_pd(in.last_taken + q, taken);
    total = _mm256_add_epi64(total, wide);
    for (int lanes = _mm256_movemask_pd(_mm256_or_pd(too_few, too_many)); lanes != 0; lanes &= lanes - 1)
      off.push_back(q + __builtin_ctz(static_cast<unsigned>(lanes)));
    most_left = _mm256_max_pd(most_left, left);
    least_taken = _mm256_min_pd(least_taken, taken);
    if ((q + 4) % 16 == 0) {  // the block's extremes, then start the next block
      alignas(32) double left[4], taken[4];
      _mm256_store_pd(left, most_left);
      _mm256_store_pd(taken, least_taken);
      in.most_left[q / 16] = std::max(std::max(left[0], left[1]), std::max(left[2], left[3]));
      in.least_taken[q / 16] = std::min(std::min(taken[0], taken[1]), std::min(taken[2], taken[3]));
      most_left = _mm256_set1_pd(-INFINITY);
      least_taken = _mm256_set1_pd(INFINITY);
    }
  }
  alignas(32) int64_t sums[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums), total);
  return sums[0] + sums[1] + sums[2] + sums[3];
}

}  // namespace

int64_t guessed_counts(const GuessedCounts& in, std::vector<int64_t>& off) {
  return in.gamma == 0 ? count_blocks<false>(in, off) : count_blocks<true>(in, off);
}

#else

bool guessed_counts_available() { return false; }
int64_t guessed_counts(const GuessedCounts&, std::vector<int64_t>&) { return 0; }

#endif

}  // namespace vipfast::allocation
