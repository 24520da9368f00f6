// X Zᵀ with AVX2 and FMA (gram_avx2.cpp); kernel.hpp's cross_gram chooses it where the CPU has them.
#pragma once

#include <cstdint>

namespace vipfast::gp {

// out (rows × m, row-major) = X Zᵀ for row-major X (rows × d) and Z (m × d); only where
// avx2_kernels_enabled() (vipfast/cpu.hpp).
void gram_avx2(const double* x, int64_t rows, const double* z, int64_t m, int64_t d, double* out);

}  // namespace vipfast::gp
