// Whether the hand-written AVX2 kernels may run.
#pragma once

namespace vipfast {

// The CPU has AVX2 and FMA, and the environment variable VIPFAST_DISABLE_AVX2 is unset or "0" (set it
// to run the portable paths, to compare results or to rule the kernels out). Read once per process, when
// the module is imported.
bool avx2_kernels_enabled();

}  // namespace vipfast
