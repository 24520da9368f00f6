// Array checks shared by the binding files: shapes and dtypes are checked at the boundary,
// values in the core.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace vipfast::bindings {

namespace py = pybind11;

using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

inline void require_ndim(const py::array& array, py::ssize_t ndim, const char* name) {
  if (array.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " +
                          std::to_string(array.ndim()) + "-D");
}

inline void require_length(py::ssize_t actual, py::ssize_t expected, const std::string& what) {
  if (actual != expected)
    throw py::value_error(what + " has length " + std::to_string(actual) + ", expected " +
                          std::to_string(expected));
}

void bind_allocation(py::module_& m);
void bind_success_gp(py::module_& m);
void bind_key_index(py::module_& m);
void bind_calibration(py::module_& m);
void bind_advantages(py::module_& m);

}  // namespace vipfast::bindings
