// The only file that knows Python: shapes and dtypes are checked here, values in the core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "vipfast/allocation.hpp"

namespace py = pybind11;

namespace {

using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

void require_ndim(const py::array& array, py::ssize_t ndim, const char* name) {
  if (array.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " +
                          std::to_string(array.ndim()) + "-D");
}

void require_length(py::ssize_t actual, py::ssize_t expected, const std::string& what) {
  if (actual != expected)
    throw py::value_error(what + " has length " + std::to_string(actual) + ", expected " +
                          std::to_string(expected));
}

// Checks the arrays against each other and points a CostModel at their buffers.
struct AllocationInputs {
  vipfast::CostModel model;
  vipfast::Bounds bounds;

  AllocationInputs(const std::optional<DoubleArray>& weights, int64_t budget, int64_t min_rollouts,
                   int64_t max_rollouts, const std::string& estimator, const std::optional<DoubleArray>& curve) {
    model.estimator = vipfast::parse_estimator(estimator);
    py::ssize_t num_prompts = -1;
    if (weights) {
      require_ndim(*weights, 1, "weights");
      num_prompts = weights->shape(0);
      model.weights = weights->data();
    }
    if (curve) {
      const py::ssize_t width = curve->ndim() >= 1 ? curve->shape(curve->ndim() - 1) : 0;
      if (curve->ndim() == 1) {
        model.curve = curve->data();
      } else if (curve->ndim() == 2) {
        if (num_prompts < 0) num_prompts = curve->shape(0);
        require_length(curve->shape(0), num_prompts, "curve's first axis (prompts)");
        model.table = curve->data();
      } else {
        throw py::value_error("curve must be 1-D (shared) or 2-D (per prompt), got " +
                              std::to_string(curve->ndim()) + "-D");
      }
      if (max_rollouts < min_rollouts || max_rollouts - min_rollouts + 1 != width)
        throw py::value_error("curve has " + std::to_string(width) + " values per prompt, but [min_rollouts, " +
                              "max_rollouts] = [" + std::to_string(min_rollouts) + ", " +
                              std::to_string(max_rollouts) + "] needs " +
                              std::to_string(max_rollouts - min_rollouts + 1));
    }
    if (num_prompts < 0) throw py::value_error("weights may be omitted only with a 2-D curve");
    if (model.table == nullptr && model.weights == nullptr)
      throw py::value_error("weights are required unless curve is a 2-D per-prompt table");
    bounds = {num_prompts, budget, min_rollouts, max_rollouts};
  }
};

py::array_t<int64_t> allocate(const std::optional<DoubleArray>& weights, int64_t budget, int64_t min_rollouts,
                              int64_t max_rollouts, const std::string& estimator,
                              const std::optional<DoubleArray>& curve) {
  const AllocationInputs in(weights, budget, min_rollouts, max_rollouts, estimator, curve);
  py::array_t<int64_t> counts(in.bounds.num_prompts);
  int64_t* out = counts.mutable_data();
  {
    py::gil_scoped_release release;
    vipfast::allocate(in.model, in.bounds, out);
  }
  return counts;
}

py::array_t<double> allocate_relaxed(const std::optional<DoubleArray>& weights, int64_t budget,
                                     int64_t min_rollouts, int64_t max_rollouts, const std::string& estimator,
                                     const std::optional<DoubleArray>& curve) {
  const AllocationInputs in(weights, budget, min_rollouts, max_rollouts, estimator, curve);
  py::array_t<double> counts(in.bounds.num_prompts);
  double* out = counts.mutable_data();
  {
    py::gil_scoped_release release;
    vipfast::allocate_relaxed(in.model, in.bounds, out);
  }
  return counts;
}

double allocation_objective(const std::optional<DoubleArray>& weights, const Int64Array& counts,
                            int64_t min_rollouts, int64_t max_rollouts, const std::string& estimator,
                            const std::optional<DoubleArray>& curve) {
  require_ndim(counts, 1, "counts");
  const AllocationInputs in(weights, 0, min_rollouts, max_rollouts, estimator, curve);
  require_length(counts.shape(0), in.bounds.num_prompts, "counts");
  const int64_t* n = counts.data();
  py::gil_scoped_release release;
  return vipfast::allocation_objective(in.model, in.bounds, n);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "vipfast native core: exact rollout allocation and the success-probability GP";
  m.attr("__version__") = VIPFAST_VERSION;

  const auto args = [](const char* last) {
    return std::make_tuple(py::arg("weights").none(true), py::arg(last), py::arg("min_rollouts"),
                           py::arg("max_rollouts"), py::arg("estimator") = "rloo",
                           py::arg("curve").none(true) = py::none());
  };
  const auto [w, b, lo, hi, est, cv] = args("budget");
  m.def("allocate", &allocate, w, b, lo, hi, est, cv,
        "Exact integer minimiser of sum_q w_q phi(n_q) under the budget and bounds (int64[Q]).");
  m.def("allocate_relaxed", &allocate_relaxed, w, b, lo, hi, est, cv,
        "Optimum of the continuous relaxation (float64[Q]).");
  m.def("allocation_objective", &allocation_objective, w, py::arg("counts"), lo, hi, est, cv,
        "sum_q w_q phi(n_q) for given counts.");
}
