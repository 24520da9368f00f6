// Python bindings of LogitCalibration, for predictors that recalibrate logits outside SuccessGP.
#include <algorithm>
#include <vector>

#include "arrays.hpp"
#include "vipfast/calibration.hpp"

namespace vipfast::bindings {
namespace {

void record(LogitCalibration& calibration, int64_t step, const DoubleArray& mean, const DoubleArray& var,
            const DoubleArray& successes, const Int64Array& trials) {
  require_ndim(mean, 1, "mean");
  const py::ssize_t count = mean.shape(0);
  require_length(var.shape(0), count, "var");
  require_length(successes.shape(0), count, "successes");
  require_length(trials.shape(0), count, "trials");
  const double *m = mean.data(), *v = var.data(), *s = successes.data();
  const int64_t* n = trials.data();
  py::gil_scoped_release release;
  calibration = calibration.recorded(step, count, m, v, s, n);
}

py::tuple apply(const LogitCalibration& calibration, const DoubleArray& mean, const DoubleArray& var) {
  require_ndim(mean, 1, "mean");
  require_length(var.shape(0), mean.shape(0), "var");
  py::array_t<double> mapped_mean(mean.shape(0)), mapped_var(mean.shape(0));
  std::copy_n(mean.data(), mean.shape(0), mapped_mean.mutable_data());
  std::copy_n(var.data(), mean.shape(0), mapped_var.mutable_data());
  calibration.apply(mean.shape(0), mapped_mean.mutable_data(), mapped_var.mutable_data());
  return py::make_tuple(mapped_mean, mapped_var);
}

// Records as a (k, 5) array: step, mean, var, successes, trials.
py::array_t<double> records(const LogitCalibration& calibration) {
  const auto& rows = calibration.records();
  py::array_t<double> out({static_cast<py::ssize_t>(rows.size()), static_cast<py::ssize_t>(5)});
  double* data = out.mutable_data();
  for (const auto& r : rows) {
    *data++ = static_cast<double>(r.step);
    *data++ = r.mean;
    *data++ = r.var;
    *data++ = r.successes;
    *data++ = r.trials;
  }
  return out;
}

void restore(LogitCalibration& calibration, double offset, double log_scale, const DoubleArray& rows) {
  require_ndim(rows, 2, "records");
  if (rows.shape(0) > 0 && rows.shape(1) != 5) throw py::value_error("records must have 5 columns");
  std::vector<LogitCalibration::Record> restored;
  for (py::ssize_t i = 0; i < rows.shape(0); ++i) {
    const double* r = rows.data(i, 0);
    restored.push_back({static_cast<int64_t>(r[0]), r[1], r[2], r[3], r[4]});
  }
  calibration.restore(offset, log_scale, std::move(restored));
}

}  // namespace

void bind_calibration(py::module_& m) {
  py::class_<LogitCalibration>(m, "LogitCalibration",
                               "Affine recalibration f -> a + b f of predicted logits, fitted on past outcomes.")
      .def(py::init([](int64_t window) {
             if (window < 0) throw py::value_error("window must be >= 0, got " + std::to_string(window));
             return LogitCalibration(window);
           }),
           py::arg("window"))
      .def("record", &record, py::arg("step"), py::arg("mean"), py::arg("var"), py::arg("successes"),
           py::arg("trials"), "Score predictions (mean, var of the logit) against their outcomes, then refit.")
      .def("apply", &apply, py::arg("mean"), py::arg("var"), "(a + b mean, b^2 var).")
      .def("records", &records, "(k, 5) float64: step, mean, var, successes, trials.")
      .def("restore", &restore, py::arg("offset"), py::arg("log_scale"), py::arg("records"))
      .def_property_readonly("offset", &LogitCalibration::offset)
      .def_property_readonly("log_scale", &LogitCalibration::log_scale);
}

}  // namespace vipfast::bindings
