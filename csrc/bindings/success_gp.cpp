// Python bindings of the success-probability GP (vipfast.SuccessGP wraps them). Types are coerced
// in Python; shapes are checked here; values in the core.
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <string>

#include "arrays.hpp"
#include "vipfast/gp/laplace.hpp"
#include "vipfast/gp/quadrature.hpp"
#include "vipfast/success_gp.hpp"

namespace vipfast::bindings {
namespace {

using UInt64Array = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;
using vipfast::PredictionBasis;
using vipfast::StateValue;
using vipfast::SuccessGP;
using vipfast::SuccessGPConfig;

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

// A numpy array that owns the vector's buffer (no copy).
template <class T>
py::array_t<T> owning_array(std::vector<T>&& values, std::vector<py::ssize_t> shape) {
  if (values.empty()) return py::array_t<T>(shape);
  auto* owned = new std::vector<T>(std::move(values));
  py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owned->data(), owner);
}

// A read-only numpy view of a vector that `owner` keeps alive.
template <class T>
py::array_t<T> read_only_view(const std::vector<T>& values, std::vector<py::ssize_t> shape, py::handle owner) {
  py::array_t<T> view(shape, values.empty() ? nullptr : values.data(), owner);
  view.attr("setflags")(py::arg("write") = false);
  return view;
}

// ---- configuration: one property per row of the option table ---------------------------------

const char* kind_label(vipfast::OptionKind kind) {
  switch (kind) {
    case vipfast::OptionKind::integer: return "int";
    case vipfast::OptionKind::real: return "float";
    case vipfast::OptionKind::optional_real: return "float or None";
    case vipfast::OptionKind::choice: return "str";
  }
  return "?";
}

py::object to_python(const vipfast::OptionValue& value) {
  if (const auto* integer = std::get_if<int64_t>(&value)) return py::int_(*integer);
  if (const auto* real = std::get_if<double>(&value)) return py::float_(*real);
  if (const auto* text = std::get_if<std::string>(&value)) return py::str(*text);
  return py::none();
}

vipfast::OptionValue from_python(const vipfast::ConfigOption& option, const py::handle& value) {
  const std::string name = option.name;
  const bool is_bool = py::isinstance<py::bool_>(value);
  switch (option.kind) {
    case vipfast::OptionKind::integer:
      if (is_bool || !py::isinstance<py::int_>(value)) throw py::type_error(name + " must be an int");
      try {
        return value.cast<int64_t>();
      } catch (const py::cast_error&) {
        throw py::value_error(name + " does not fit in int64");
      }
    case vipfast::OptionKind::optional_real:
      if (value.is_none()) return std::monostate{};
      [[fallthrough]];
    case vipfast::OptionKind::real:
      if (is_bool || !(py::isinstance<py::int_>(value) || py::isinstance<py::float_>(value)))
        throw py::type_error(name + " must be a float" + (option.kind == vipfast::OptionKind::real ? "" : " or None"));
      return value.cast<double>();
    case vipfast::OptionKind::choice:
      if (!py::isinstance<py::str>(value)) throw py::type_error(name + " must be a str");
      return value.cast<std::string>();
  }
  return std::monostate{};
}

py::dict config_dict(const SuccessGPConfig& config) {
  py::dict out;
  for (const vipfast::ConfigOption& option : vipfast::config_options())
    out[option.name] = to_python(option.get(config));
  return out;
}

void bind_config(py::module_& m) {
  py::class_<SuccessGPConfig> config(m, "SuccessGPConfig",
                                     "The options of a SuccessGP, one property each; values are checked when a "
                                     "SuccessGP is built from it.");
  config.def(py::init<>());
  for (const vipfast::ConfigOption& option : vipfast::config_options()) {
    const vipfast::ConfigOption* row = &option;  // the table is static
    config.def_property(
        option.name, [row](const SuccessGPConfig& c) { return to_python(row->get(c)); },
        [row](SuccessGPConfig& c, const py::handle& value) { vipfast::set_option(c, *row, from_python(*row, value)); },
        kind_label(option.kind));
  }
  config.def("as_dict", &config_dict, "{option: value}");
  config.def_static(
      "option_kinds",
      [] {
        py::dict kinds;
        for (const vipfast::ConfigOption& option : vipfast::config_options()) kinds[option.name] = kind_label(option.kind);
        return kinds;
      },
      "{option: 'int' | 'float' | 'float or None' | 'str'}, in the table's order.");
}

// ---- prediction basis ----------------------------------------------------------------------------

template <class T>
py::array_t<T> copied(const std::vector<T>& values) {
  return py::array_t<T>(static_cast<py::ssize_t>(values.size()), values.data());
}

py::tuple basis_state(const PredictionBasis& b) {
  return py::make_tuple(copied(b.keys), copied(b.latent_mean), copied(b.latent_var), b.inducing_id, b.feature_width,
                        copied(b.feature_rows), copied(b.features), copied(b.feature_embeddings));
}

template <class T>
std::vector<T> vector_from(const py::handle& item, const char* name) {
  const auto array = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(item);
  if (!array || array.ndim() != 1) throw py::value_error(std::string("prediction state: ") + name + " must be a 1-D array");
  return std::vector<T>(array.data(), array.data() + array.size());
}

PredictionBasis basis_from_state(const py::tuple& state) {
  if (state.size() != 8) throw py::value_error("prediction state must be an 8-tuple");
  PredictionBasis b;
  b.keys = vector_from<uint64_t>(state[0], "keys");
  b.latent_mean = vector_from<double>(state[1], "latent_mean");
  b.latent_var = vector_from<double>(state[2], "latent_var");
  b.inducing_id = state[3].cast<uint64_t>();
  b.feature_width = state[4].cast<int64_t>();
  b.feature_rows = vector_from<int64_t>(state[5], "feature_rows");
  b.features = vector_from<double>(state[6], "features");
  b.feature_embeddings = vector_from<double>(state[7], "feature_embeddings");
  return b;
}

void bind_prediction_basis(py::module_& m) {
  py::class_<PredictionBasis>(m, "PredictionBasis",
                              "What observe can reuse of a prediction of the same rows (read-only).")
      .def_property_readonly("keys", [](py::object self) {
        const auto& b = self.cast<const PredictionBasis&>();
        return read_only_view(b.keys, {static_cast<py::ssize_t>(b.keys.size())}, self);
      })
      .def_property_readonly("latent_mean", [](py::object self) {
        const auto& b = self.cast<const PredictionBasis&>();
        return read_only_view(b.latent_mean, {static_cast<py::ssize_t>(b.latent_mean.size())}, self);
      }, "The GP's posterior mean of the logit, before recalibration.")
      .def_property_readonly("latent_var", [](py::object self) {
        const auto& b = self.cast<const PredictionBasis&>();
        return read_only_view(b.latent_var, {static_cast<py::ssize_t>(b.latent_var.size())}, self);
      }, "The GP's posterior variance of the logit, before recalibration.")
      .def_readonly("inducing_id", &PredictionBasis::inducing_id, "The fast engine's inducing set (0: none).")
      .def_property_readonly("feature_rows", [](py::object self) {
        const auto& b = self.cast<const PredictionBasis&>();
        return read_only_view(b.feature_rows, {static_cast<py::ssize_t>(b.feature_rows.size())}, self);
      }, "Rows whose features the fast engine computed.")
      .def_property_readonly("features", [](py::object self) {
        const auto& b = self.cast<const PredictionBasis&>();
        const auto rows = static_cast<py::ssize_t>(b.feature_rows.size());
        return read_only_view(b.features, {rows, rows ? static_cast<py::ssize_t>(b.feature_width) : 0}, self);
      }, "Their whitened features, float64 [U, M].")
      .def(py::pickle(&basis_state, &basis_from_state));
}

// ---- the model -----------------------------------------------------------------------------------

void gp_observe(SuccessGP& gp, const UInt64Array& keys, const DoubleArray& embeddings, const DoubleArray& successes,
                const Int64Array& trials, const PredictionBasis* prediction) {
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
  gp.observe(count, k, x, s, n, prediction);
}

py::tuple gp_predict(SuccessGP& gp, const UInt64Array& keys, const DoubleArray& embeddings) {
  const py::ssize_t count = check_batch(gp, keys, embeddings);
  const uint64_t* k = keys.data();
  const double* x = embeddings.data();
  vipfast::Prediction out;
  {
    py::gil_scoped_release release;
    out = gp.predict(count, k, x);
  }
  auto basis = std::make_unique<PredictionBasis>(std::move(out.basis));
  return py::make_tuple(owning_array(std::move(out.mean), {count}), owning_array(std::move(out.var), {count}),
                        owning_array(std::move(out.proba), {count}), owning_array(std::move(out.weight), {count}),
                        py::cast(std::move(basis)));
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

StateValue state_value(const std::string& name, const py::handle& item) {
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
    throw py::type_error("state['" + name + "'] has type " +
                         std::string(py::str(py::type::handle_of(item).attr("__name__"))) +
                         "; numbers, str and numpy arrays are expected");
  }
  return value;
}

std::unique_ptr<SuccessGP> gp_from_state(const py::dict& state) {
  vipfast::GPState native;
  for (const auto& [key, item] : state) {
    if (!py::isinstance<py::str>(key)) throw py::type_error("state keys must be str");
    const auto name = key.cast<std::string>();
    native.emplace(name, state_value(name, item));
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
  out["keys"] = owning_array(std::move(obs.keys), {n});
  out["embeddings"] = owning_array(std::move(obs.embeddings), {n, dim});
  out["targets"] = owning_array(std::move(obs.targets), {n});
  out["noise_var"] = owning_array(std::move(obs.noise_var), {n});
  out["successes"] = owning_array(std::move(obs.successes), {n});
  out["trials"] = owning_array(std::move(obs.trials), {n});
  if (gp.config().noise == vipfast::NoiseModel::laplace) out["linearisation"] = owning_array(std::move(obs.linearisation), {n});
  return out;
}

py::tuple gp_stored_sites(const SuccessGP& gp, const UInt64Array& keys) {
  require_ndim(keys, 1, "keys");
  const py::ssize_t count = keys.shape(0);
  py::array_t<double> precision(count), target(count);
  const uint64_t* k = keys.data();
  double* out_precision = precision.mutable_data();
  double* out_target = target.mutable_data();
  {
    py::gil_scoped_release release;
    gp.stored_sites(count, k, out_precision, out_target);
  }
  return py::make_tuple(precision, target);
}

py::array_t<double> expected_bernoulli_variances(const DoubleArray& mean, const DoubleArray& var) {
  require_ndim(mean, 1, "mean");
  require_ndim(var, 1, "var");
  require_length(var.shape(0), mean.shape(0), "var");
  const py::ssize_t count = mean.shape(0);
  py::array_t<double> out(count);
  const double *m = mean.data(), *v = var.data();
  double* w = out.mutable_data();
  py::gil_scoped_release release;
  for (py::ssize_t i = 0; i < count; ++i) w[i] = vipfast::gp::expected_bernoulli_variance(m[i], v[i]);
  return out;
}

py::tuple laplace_posteriors(const DoubleArray& prior_mean, const DoubleArray& prior_var, const DoubleArray& successes,
                             const DoubleArray& trials) {
  require_ndim(prior_mean, 1, "prior_mean");
  require_ndim(prior_var, 1, "prior_var");
  require_ndim(successes, 1, "successes");
  require_ndim(trials, 1, "trials");
  const py::ssize_t count = prior_mean.shape(0);
  require_length(prior_var.shape(0), count, "prior_var");
  require_length(successes.shape(0), count, "successes");
  require_length(trials.shape(0), count, "trials");
  py::array_t<double> mean(count), var(count);
  const double *m = prior_mean.data(), *v = prior_var.data(), *k = successes.data(), *n = trials.data();
  double *out_mean = mean.mutable_data(), *out_var = var.mutable_data();
  {
    py::gil_scoped_release release;
    vipfast::gp::laplace_posteriors(count, m, v, k, n, out_mean, out_var);
  }
  return py::make_tuple(mean, var);
}

vipfast::ObserveStage stage_named(const std::string& name) {
  if (name == "relinearised") return vipfast::ObserveStage::relinearised;
  if (name == "stored") return vipfast::ObserveStage::stored;
  if (name == "engine_updated") return vipfast::ObserveStage::engine_updated;
  if (name == "none") return vipfast::ObserveStage::none;
  throw py::value_error("stage must be 'relinearised', 'stored', 'engine_updated' or 'none', got '" + name + "'");
}

py::object optional_real(double value) { return std::isnan(value) ? py::object(py::none()) : py::float_(value); }

}  // namespace

void bind_success_gp(py::module_& m) {
  bind_config(m);
  bind_prediction_basis(m);
  py::class_<SuccessGP>(m, "SuccessGP", "Native success-probability GP; use vipfast.SuccessGP.")
      .def(py::init([](const SuccessGPConfig& config) { return std::make_unique<SuccessGP>(config); }),
           py::arg("config"))
      .def("observe", &gp_observe, py::arg("keys"), py::arg("embeddings"), py::arg("successes"), py::arg("trials"),
           py::arg("prediction") = py::none())
      .def("advance", [](SuccessGP& gp, int64_t steps) {
             py::gil_scoped_release release;
             gp.advance(steps);
           }, py::arg("steps"))
      .def("predict", &gp_predict, py::arg("keys"), py::arg("embeddings"),
           "(mean, var, proba, weight, basis): float64[Q] each and the PredictionBasis observe can take back.")
      .def("state", &gp_state)
      .def_static("from_state", &gp_from_state, py::arg("state"))
      .def("pseudo_observations", &gp_pseudo_observations)
      .def("stored_sites", &gp_stored_sites, py::arg("keys"),
           "(precision, target) float64[Q] of each key's current site; precision 0 where not stored.")
      .def("_inject_failure_after", [](SuccessGP& gp, const std::string& stage) { gp.inject_failure_after(stage_named(stage)); },
           py::arg("stage"), "Tests only: the next observe fails once it has completed this stage.")
      .def_property_readonly("dim", [](const SuccessGP& gp) { return gp.config().dim; })
      .def_property_readonly("step", &SuccessGP::step)
      .def_property_readonly("num_stored", &SuccessGP::num_stored)
      .def_property_readonly("lengthscale", [](const SuccessGP& gp) { return optional_real(gp.lengthscale()); })
      .def_property_readonly("prior_mean", &SuccessGP::prior_mean)
      .def_property_readonly("active_mode", [](const SuccessGP& gp) { return vipfast::gp_mode_name(gp.active_mode()); })
      .def_property_readonly("num_inducing_used", &SuccessGP::num_inducing_used)
      .def_property_readonly("config", [](const SuccessGP& gp) { return config_dict(gp.config()); })
      .def_property_readonly("calibration", &SuccessGP::calibration, "(offset, scale) of the recalibration map.");
  m.attr("SUCCESS_GP_STATE_VERSION") = vipfast::kSuccessGPStateVersion;
  m.def("expected_bernoulli_variance", &expected_bernoulli_variances, py::arg("mean"), py::arg("var"),
        "E[sigmoid(f)(1 - sigmoid(f))] for f ~ N(mean, var), elementwise, float64[Q].");
  m.def("laplace_posterior", &laplace_posteriors, py::arg("prior_mean"), py::arg("prior_var"), py::arg("successes"),
        py::arg("trials"),
        "(mean, var) of the Laplace approximation of f's posterior under N(prior_mean, prior_var) and binomial\n"
        "counts, elementwise, float64[Q] each.");
}

}  // namespace vipfast::bindings
