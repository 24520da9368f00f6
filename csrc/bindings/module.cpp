// The extension module vipfast._core: each binding file adds its part.
#include "arrays.hpp"
#include "vipfast/cpu.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "vipfast native core: exact rollout allocation and the success-probability GP";
  m.attr("__version__") = VIPFAST_VERSION;
  vipfast::bindings::bind_allocation(m);
  vipfast::bindings::bind_success_gp(m);
  vipfast::bindings::bind_key_index(m);
  vipfast::bindings::bind_calibration(m);
  vipfast::bindings::bind_advantages(m);
  // VIPFAST_DISABLE_AVX2 is read now, under the GIL, not later on a thread that could race os.environ.
  vipfast::avx2_kernels_enabled();
}
