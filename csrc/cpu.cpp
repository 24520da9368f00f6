#include "vipfast/cpu.hpp"

#include <cstdlib>
#include <cstring>

namespace vipfast {

bool avx2_kernels_enabled() {
  static const bool enabled = [] {
    const char* disable = std::getenv("VIPFAST_DISABLE_AVX2");
    if (disable != nullptr && std::strcmp(disable, "") != 0 && std::strcmp(disable, "0") != 0) return false;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
  }();
  return enabled;
}

}  // namespace vipfast
