// Python bindings of the allocation solver (vipfast.allocate and friends).
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <tuple>

#include "arrays.hpp"
#include "vipfast/allocation.hpp"

namespace vipfast::bindings {
namespace {

// Unaligned buffers are copied on the way in (the core reads them as double and int64);
// aligned C-contiguous arrays of the right dtype pass without a copy.
constexpr int kAligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;
using AlignedDoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast | kAligned>;
// No forcecast: uint64 or float counts would wrap silently; the Python layer converts them with checks.
using AlignedInt64Array = py::array_t<int64_t, py::array::c_style | kAligned>;

// Checks the arrays against each other and points a CostModel at their buffers.
struct AllocationInputs {
  vipfast::CostModel model;
  vipfast::Bounds bounds;

  AllocationInputs(const std::optional<AlignedDoubleArray>& weights, int64_t budget, int64_t min_rollouts,
                   int64_t max_rollouts, const std::string& estimator, const std::optional<AlignedDoubleArray>& curve) {
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
      // The span in uint64 is exact for any max >= min; int64 subtraction could overflow.
      const uint64_t span = static_cast<uint64_t>(max_rollouts) - static_cast<uint64_t>(min_rollouts);
      if (max_rollouts < min_rollouts || width < 1 || span != static_cast<uint64_t>(width) - 1)
        throw py::value_error("curve has " + std::to_string(width) + " values per prompt, but [min_rollouts, " +
                              "max_rollouts] = [" + std::to_string(min_rollouts) + ", " +
                              std::to_string(max_rollouts) + "] needs one per count in that range");
    }
    if (num_prompts < 0) throw py::value_error("weights may be omitted only with a 2-D curve");
    if (model.table == nullptr && model.weights == nullptr)
      throw py::value_error("weights are required unless curve is a 2-D per-prompt table");
    bounds = {num_prompts, budget, min_rollouts, max_rollouts};
  }
};

py::array_t<int64_t> allocate(const std::optional<AlignedDoubleArray>& weights, int64_t budget, int64_t min_rollouts,
                              int64_t max_rollouts, const std::string& estimator,
                              const std::optional<AlignedDoubleArray>& curve) {
  const AllocationInputs in(weights, budget, min_rollouts, max_rollouts, estimator, curve);
  py::array_t<int64_t> counts(in.bounds.num_prompts);
  int64_t* out = counts.mutable_data();
  {
    py::gil_scoped_release release;
    vipfast::allocate(in.model, in.bounds, out);
  }
  return counts;
}

py::array_t<double> allocate_relaxed(const std::optional<AlignedDoubleArray>& weights, int64_t budget,
                                     int64_t min_rollouts, int64_t max_rollouts, const std::string& estimator,
                                     const std::optional<AlignedDoubleArray>& curve) {
  const AllocationInputs in(weights, budget, min_rollouts, max_rollouts, estimator, curve);
  py::array_t<double> counts(in.bounds.num_prompts);
  double* out = counts.mutable_data();
  {
    py::gil_scoped_release release;
    vipfast::allocate_relaxed(in.model, in.bounds, out);
  }
  return counts;
}

double allocation_objective(const std::optional<AlignedDoubleArray>& weights, const AlignedInt64Array& counts,
                            int64_t min_rollouts, int64_t max_rollouts, const std::string& estimator,
                            const std::optional<AlignedDoubleArray>& curve) {
  require_ndim(counts, 1, "counts");
  const AllocationInputs in(weights, 0, min_rollouts, max_rollouts, estimator, curve);
  require_length(counts.shape(0), in.bounds.num_prompts, "counts");
  const int64_t* n = counts.data();
  py::gil_scoped_release release;
  return vipfast::allocation_objective(in.model, in.bounds, n);
}

// The estimator table, (name, min_rollouts, variance formula) per estimator.
py::tuple estimator_table() {
  py::list rows;
  for (const vipfast::EstimatorSpec& spec : vipfast::kEstimators)
    rows.append(py::make_tuple(spec.name, spec.min_rollouts, spec.variance));
  return py::tuple(rows);
}

}  // namespace

void bind_allocation(py::module_& m) {
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
  m.attr("ESTIMATOR_TABLE") = estimator_table();
}

}  // namespace vipfast::bindings
