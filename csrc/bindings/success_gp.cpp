// Python bindings of the success-probability GP (vipfast.SuccessGP wraps them).
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>

#include "arrays.hpp"
#include "vipfast/success_gp.hpp"

namespace vipfast::bindings {
namespace {


using UInt64Array = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;
using vipfast::StateValue;
using vipfast::SuccessGP;

std::string shape_text(const py::array& array) {
  std::string text = "(";
  for (py::ssize_t i = 0; i < array.ndim(); ++i) text += (i ? ", " : "") + std::to_string(array.shape(i));
  return text + (array.ndim() == 1 ? ",)" : ")");
}

py::ssize_t check_batch(const SuccessGP& gp, const UInt64Array& keys, const DoubleArray& embeddings) {
  require_ndim(keys, 1, "keys");
  const int64_t dim = gp.config().dim;
  if (embeddings.ndim() != 2 || embeddings.shape(1) != dim)
    throw py::value_error("embeddings must have shape (Q, dim) = (Q, " + std::to_string(dim) + "), got " +
                          shape_text(embeddings));
  require_length(embeddings.shape(0), keys.shape(0), "embeddings' first axis");
  return keys.shape(0);
}

std::unique_ptr<SuccessGP> make_success_gp(int64_t dim, std::optional<double> lengthscale, double signal_var,
                                           std::optional<double> prior_mean, double forgetting, int64_t capacity,
                                           const std::string& mode, const std::string& noise, double jitter,
                                           double clip, const std::string& proba, int64_t num_inducing,
                                           int64_t auto_exact_max, int64_t calibration_window) {
  vipfast::SuccessGPConfig config;
  config.dim = dim;
  if (lengthscale) {
    if (!(*lengthscale > 0)) throw py::value_error("lengthscale must be positive (or None for the median heuristic)");
    config.lengthscale = *lengthscale;
  }
  config.signal_var = signal_var;
  config.fixed_prior_mean = prior_mean.has_value();
  config.prior_mean = prior_mean.value_or(0.0);
  config.forgetting = forgetting;
  config.capacity = capacity;
  config.mode = vipfast::parse_gp_mode(mode);
  config.noise = vipfast::parse_noise_model(noise);
  config.jitter = jitter;
  config.clip = clip;
  config.proba = vipfast::parse_proba_method(proba);
  config.num_inducing = num_inducing;
  config.auto_exact_max = auto_exact_max;
  config.calibration_window = calibration_window;
  return std::make_unique<SuccessGP>(config);
}

void gp_observe(SuccessGP& gp, const UInt64Array& keys, const DoubleArray& embeddings, const DoubleArray& successes,
                const Int64Array& trials) {
  const py::ssize_t count = check_batch(gp, keys, embeddings);
  require_ndim(successes, 1, "successes");
  require_ndim(trials, 1, "trials");
  require_length(successes.shape(0), count, "successes");
  require_length(trials.shape(0), count, "trials");
  const uint64_t* k = keys.data();
  const double* x = embeddings.data();
  const double* s = successes.data();
  const int64_t* n = trials.data();
  py::gil_scoped_release release;
  gp.observe(count, k, x, s, n);
}

py::tuple gp_predict(SuccessGP& gp, const UInt64Array& keys, const DoubleArray& embeddings) {
  const py::ssize_t count = check_batch(gp, keys, embeddings);
  py::array_t<double> mean(count), var(count), proba(count), weight(count);
  const vipfast::PredictOutputs out{mean.mutable_data(), var.mutable_data(), proba.mutable_data(), weight.mutable_data()};
  const uint64_t* k = keys.data();
  const double* x = embeddings.data();
  {
    py::gil_scoped_release release;
    gp.predict(count, k, x, out);
  }
  return py::make_tuple(mean, var, proba, weight);
}

template <class T>
py::array_t<T> state_array(const StateValue& value, const std::vector<T>& data) {
  std::vector<py::ssize_t> shape(value.shape.begin(), value.shape.end());
  return py::array_t<T>(shape, data.data());
}

py::dict gp_state(const SuccessGP& gp) {
  vipfast::GPState state;
  {
    py::gil_scoped_release release;
    state = gp.state();
  }
  py::dict out;
  for (const auto& [name, value] : state) {
    switch (value.kind) {
      case StateValue::Kind::real: out[py::str(name)] = py::float_(value.real); break;
      case StateValue::Kind::integer: out[py::str(name)] = py::int_(value.integer); break;
      case StateValue::Kind::text: out[py::str(name)] = py::str(value.text); break;
      case StateValue::Kind::reals: out[py::str(name)] = state_array(value, value.reals); break;
      case StateValue::Kind::integers: out[py::str(name)] = state_array(value, value.integers); break;
      case StateValue::Kind::unsigneds: out[py::str(name)] = state_array(value, value.unsigneds); break;
    }
  }
  return out;
}

template <class T>
void read_state_array(const py::array& source, StateValue& value, std::vector<T>& data) {
  const auto array = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(source);
  if (!array) throw py::value_error("cannot convert a state array");
  value.shape.assign(array.shape(), array.shape() + array.ndim());
  data.assign(array.data(), array.data() + array.size());
}

std::unique_ptr<SuccessGP> gp_from_state(const py::dict& state) {
  vipfast::GPState native;
  for (const auto& [key, item] : state) {
    if (!py::isinstance<py::str>(key)) throw py::type_error("state keys must be str");
    const auto name = key.cast<std::string>();
    StateValue value;
    if (py::isinstance<py::bool_>(item)) {
      throw py::type_error("state['" + name + "'] is a bool; numbers, str and numpy arrays are expected");
    } else if (py::isinstance<py::str>(item)) {
      value.kind = StateValue::Kind::text;
      value.text = item.cast<std::string>();
    } else if (py::isinstance<py::int_>(item)) {
      value.kind = StateValue::Kind::integer;
      try {
        value.integer = item.cast<int64_t>();
      } catch (const py::cast_error&) {
        throw py::value_error("state['" + name + "'] does not fit in int64");
      }
    } else if (py::isinstance<py::float_>(item)) {
      value.kind = StateValue::Kind::real;
      value.real = item.cast<double>();
    } else if (py::isinstance<py::array>(item)) {
      const auto array = py::reinterpret_borrow<py::array>(item);
      const char kind = array.dtype().kind();
      if (kind == 'f') {
        value.kind = StateValue::Kind::reals;
        read_state_array(array, value, value.reals);
      } else if (kind == 'i') {
        value.kind = StateValue::Kind::integers;
        read_state_array(array, value, value.integers);
      } else if (kind == 'u') {
        value.kind = StateValue::Kind::unsigneds;
        read_state_array(array, value, value.unsigneds);
      } else {
        throw py::type_error("state['" + name + "'] has dtype " + std::string(py::str(array.dtype())) +
                             "; float, int or uint arrays are expected");
      }
    } else {
      throw py::type_error("state['" + name + "'] has type " + std::string(py::str(py::type::handle_of(item).attr("__name__"))) +
                           "; numbers, str and numpy arrays are expected");
    }
    native.emplace(name, std::move(value));
  }
  py::gil_scoped_release release;
  return SuccessGP::from_state(native);
}

py::dict gp_pseudo_observations(const SuccessGP& gp) {
  vipfast::PseudoObservations obs;
  {
    py::gil_scoped_release release;
    obs = gp.pseudo_observations();
  }
  const auto n = static_cast<py::ssize_t>(obs.keys.size());
  const auto dim = static_cast<py::ssize_t>(gp.config().dim);
  py::dict out;
  out["keys"] = py::array_t<uint64_t>(n, obs.keys.data());
  out["embeddings"] = py::array_t<double>({n, dim}, obs.embeddings.data());
  out["targets"] = py::array_t<double>(n, obs.targets.data());
  out["noise_var"] = py::array_t<double>(n, obs.noise_var.data());
  out["successes"] = py::array_t<double>(n, obs.successes.data());
  out["trials"] = py::array_t<double>(n, obs.trials.data());
  if (gp.config().noise == vipfast::NoiseModel::laplace)
    out["linearisation"] = py::array_t<double>(n, obs.linearisation.data());
  return out;
}

py::object optional_real(double value) { return std::isnan(value) ? py::object(py::none()) : py::float_(value); }

}  // namespace

void bind_success_gp(py::module_& m) {
  py::class_<SuccessGP>(m, "SuccessGP", "Native success-probability GP; use vipfast.SuccessGP.")
      .def(py::init(&make_success_gp), py::arg("dim"), py::arg("lengthscale").none(true), py::arg("signal_var"),
           py::arg("prior_mean").none(true), py::arg("forgetting"), py::arg("capacity"), py::arg("mode"),
           py::arg("noise"), py::arg("jitter"), py::arg("clip"), py::arg("proba"), py::arg("num_inducing"),
           py::arg("auto_exact_max"), py::arg("calibration_window"))
      .def("observe", &gp_observe, py::arg("keys"), py::arg("embeddings"), py::arg("successes"), py::arg("trials"))
      .def("advance", [](SuccessGP& gp, int64_t steps) {
             py::gil_scoped_release release;
             gp.advance(steps);
           }, py::arg("steps"))
      .def("predict", &gp_predict, py::arg("keys"), py::arg("embeddings"),
           "(mean, var, proba, weight), each float64[Q].")
      .def("state", &gp_state)
      .def_static("from_state", &gp_from_state, py::arg("state"))
      .def("pseudo_observations", &gp_pseudo_observations)
      .def_property_readonly("dim", [](const SuccessGP& gp) { return gp.config().dim; })
      .def_property_readonly("step", &SuccessGP::step)
      .def_property_readonly("num_stored", &SuccessGP::num_stored)
      .def_property_readonly("lengthscale", [](const SuccessGP& gp) { return optional_real(gp.lengthscale()); })
      .def_property_readonly("prior_mean", &SuccessGP::prior_mean)
      .def_property_readonly("active_mode", [](const SuccessGP& gp) { return vipfast::gp_mode_name(gp.active_mode()); })
      .def_property_readonly("num_inducing_used", &SuccessGP::num_inducing_used)
      .def_property_readonly("config", [](const SuccessGP& gp) {
        const vipfast::SuccessGPConfig& c = gp.config();
        py::dict out;
        out["dim"] = c.dim;
        out["lengthscale"] = c.lengthscale > 0 ? py::object(py::float_(c.lengthscale)) : py::object(py::none());
        out["signal_var"] = c.signal_var;
        out["prior_mean"] = c.fixed_prior_mean ? py::object(py::float_(c.prior_mean)) : py::object(py::none());
        out["forgetting"] = c.forgetting;
        out["capacity"] = c.capacity;
        out["mode"] = vipfast::gp_mode_name(c.mode);
        out["noise"] = vipfast::noise_model_name(c.noise);
        out["jitter"] = c.jitter;
        out["clip"] = c.clip;
        out["proba"] = vipfast::proba_method_name(c.proba);
        out["num_inducing"] = c.num_inducing;
        out["auto_exact_max"] = c.auto_exact_max;
        out["calibration_window"] = c.calibration_window;
        return out;
      })
      .def_property_readonly("calibration", &SuccessGP::calibration, "(offset, scale) of the recalibration map.");
  m.attr("SUCCESS_GP_STATE_VERSION") = vipfast::kSuccessGPStateVersion;
}

}  // namespace vipfast::bindings
