#include "vipfast/gp/state_io.hpp"
#include "vipfast/fail.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <variant>

#ifndef VIPFAST_VERSION
#define VIPFAST_VERSION "unknown"
#endif

namespace vipfast::gp {
namespace {

using Kind = StateValue::Kind;

// The lengths an array's axes must have: the stored keys n, the embedding width, the inducing
// points m, the calibration records r, or four.
enum class Extent { keys, dim, inducing, records, four };
// When an entry belongs in a state.
enum class Presence { always, laplace };

template <class T>
using Access = T& (*)(SavedGP&);
using AnyAccess = std::variant<Access<int64_t>, Access<double>, Access<std::vector<uint64_t>>,
                               Access<std::vector<double>>, Access<std::vector<int64_t>>>;

struct Field {
  const char* name;
  AnyAccess access;
  std::vector<Extent> shape = {};
  Presence presence = Presence::always;
};

// The model's entries, after the configuration options. An array's unknown extents (n, r) are
// taken from the first array that has them, so "keys" and "calibration_record_steps" come first.
const std::vector<Field>& model_fields() {
  static const std::vector<Field> fields{
      {"step", +[](SavedGP& s) -> auto& { return s.store.step; }},
      {"seq_counter", +[](SavedGP& s) -> auto& { return s.store.seq_counter; }},
      {"lengthscale_in_use", +[](SavedGP& s) -> auto& { return s.store.lengthscale_in_use; }},
      {"lengthscale_provisional", +[](SavedGP& s) -> auto& { return s.store.lengthscale_provisional; }},
      {"lengthscale_count", +[](SavedGP& s) -> auto& { return s.store.lengthscale_count; }},
      {"lengthscale_inserts", +[](SavedGP& s) -> auto& { return s.store.lengthscale_inserts; }},
      {"keys", +[](SavedGP& s) -> auto& { return s.store.keys; }, {Extent::keys}},
      {"embeddings", +[](SavedGP& s) -> auto& { return s.store.embeddings; }, {Extent::keys, Extent::dim}},
      {"successes", +[](SavedGP& s) -> auto& { return s.store.successes; }, {Extent::keys}},
      {"trials", +[](SavedGP& s) -> auto& { return s.store.trials; }, {Extent::keys}},
      {"observed_step", +[](SavedGP& s) -> auto& { return s.store.observed_step; }, {Extent::keys}},
      {"recency", +[](SavedGP& s) -> auto& { return s.store.recency; }, {Extent::keys}},
      {"linearisation", +[](SavedGP& s) -> auto& { return s.store.linearisation; }, {Extent::keys}, Presence::laplace},
      {"num_inducing_used", +[](SavedGP& s) -> auto& { return s.fast.num_inducing_used; }},
      {"inducing_points", +[](SavedGP& s) -> auto& { return s.fast.inducing_points; }, {Extent::inducing, Extent::dim}},
      {"features", +[](SavedGP& s) -> auto& { return s.fast.features; }, {Extent::keys, Extent::inducing}},
      {"information", +[](SavedGP& s) -> auto& { return s.fast.information; }, {Extent::inducing, Extent::inducing}},
      {"information_targets", +[](SavedGP& s) -> auto& { return s.fast.information_targets; }, {Extent::inducing}},
      {"information_weights", +[](SavedGP& s) -> auto& { return s.fast.information_weights; }, {Extent::inducing}},
      {"coverage_reference", +[](SavedGP& s) -> auto& { return s.fast.coverage_reference; }},
      {"coverage_average", +[](SavedGP& s) -> auto& { return s.fast.coverage_average; }},
      {"inducing_selected_at", +[](SavedGP& s) -> auto& { return s.fast.inducing_selected_at; }},
      {"calibration_offset", +[](SavedGP& s) -> auto& { return s.calibration.offset; }},
      {"calibration_log_scale", +[](SavedGP& s) -> auto& { return s.calibration.log_scale; }},
      {"calibration_record_steps", +[](SavedGP& s) -> auto& { return s.calibration.record_steps; }, {Extent::records}},
      {"calibration_records", +[](SavedGP& s) -> auto& { return s.calibration.records; }, {Extent::records, Extent::four}},
  };
  return fields;
}

bool present(Presence presence, const SuccessGPConfig& config) {
  return presence == Presence::always || config.noise == NoiseModel::laplace;
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::real: return "a float";
    case Kind::integer: return "an int";
    case Kind::text: return "a str";
    case Kind::reals: return "a float64 array";
    case Kind::integers: return "an int64 array";
    case Kind::unsigneds: return "a uint64 array";
  }
  return "?";
}

template <class T>
constexpr Kind array_kind() {
  if constexpr (std::is_same_v<T, double>) return Kind::reals;
  else if constexpr (std::is_same_v<T, int64_t>) return Kind::integers;
  else return Kind::unsigneds;
}

template <class T>
std::vector<T>& array_of(StateValue& value) {
  if constexpr (std::is_same_v<T, double>) return value.reals;
  else if constexpr (std::is_same_v<T, int64_t>) return value.integers;
  else return value.unsigneds;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream text;
  text << "(";
  for (int64_t e : shape) text << e << ",";
  text << ")";
  return text.str();
}

// ---- writing --------------------------------------------------------------------------------------

class Writer {
 public:
  explicit Writer(const SavedGP& saved) : saved_(saved) {}

  void operator()(const Field& field, Access<int64_t> access) {
    StateValue& entry = state[field.name];
    entry.kind = Kind::integer;
    entry.integer = access(mutable_saved());
  }
  void operator()(const Field& field, Access<double> access) {
    StateValue& entry = state[field.name];
    entry.kind = Kind::real;
    entry.real = access(mutable_saved());
  }
  template <class T>
  void operator()(const Field& field, Access<std::vector<T>> access) {
    StateValue& entry = state[field.name];
    entry.kind = array_kind<T>();
    array_of<T>(entry) = access(mutable_saved());
    for (Extent extent : field.shape) entry.shape.push_back(length(extent));
  }

  GPState state;

 private:
  // The accessors serve reading and writing alike; writing only reads through them.
  SavedGP& mutable_saved() { return const_cast<SavedGP&>(saved_); }
  int64_t length(Extent extent) const {
    switch (extent) {
      case Extent::keys: return static_cast<int64_t>(saved_.store.keys.size());
      case Extent::dim: return saved_.config.dim;
      case Extent::inducing: return saved_.fast.num_inducing_used;
      case Extent::records: return static_cast<int64_t>(saved_.calibration.record_steps.size());
      case Extent::four: return 4;
    }
    return 0;
  }
  const SavedGP& saved_;
};

StateValue option_value(const OptionValue& option) {
  StateValue value;
  if (const auto* integer = std::get_if<int64_t>(&option)) {
    value.kind = Kind::integer;
    value.integer = *integer;
  } else if (const auto* real = std::get_if<double>(&option)) {
    value.kind = Kind::real;
    value.real = *real;
  } else {
    value.kind = Kind::text;
    value.text = std::get<std::string>(option);
  }
  return value;
}

// ---- reading --------------------------------------------------------------------------------------

const StateValue& entry(const GPState& state, const std::string& name, Kind kind) {
  const auto it = state.find(name);
  if (it == state.end()) fail("state is missing '", name, "'");
  // Integers are acceptable where floats are expected (e.g. signal_var = 1 written by hand).
  if (it->second.kind != kind && !(kind == Kind::real && it->second.kind == Kind::integer))
    fail("state['", name, "'] must be ", kind_name(kind), ", got ", kind_name(it->second.kind));
  return it->second;
}

double real_of(const StateValue& value) {
  return value.kind == Kind::integer ? static_cast<double>(value.integer) : value.real;
}

class Reader {
 public:
  Reader(const GPState& state, SavedGP& saved) : state_(state), saved_(saved) {}

  void operator()(const Field& field, Access<int64_t> access) { access(saved_) = entry(state_, field.name, Kind::integer).integer; }
  void operator()(const Field& field, Access<double> access) { access(saved_) = real_of(entry(state_, field.name, Kind::real)); }
  template <class T>
  void operator()(const Field& field, Access<std::vector<T>> access) {
    const StateValue& value = entry(state_, field.name, array_kind<T>());
    std::vector<int64_t> expected;
    for (size_t axis = 0; axis < field.shape.size(); ++axis)
      expected.push_back(axis < value.shape.size() ? resolve(field.shape[axis], value.shape[axis]) : -1);
    if (value.shape != expected)
      fail("state['", field.name, "'] has shape ", shape_text(value.shape), " but ", shape_text(expected), " is expected");
    const std::vector<T>& data = array_of<T>(const_cast<StateValue&>(value));
    if constexpr (std::is_same_v<T, double>)
      for (size_t i = 0; i < data.size(); ++i)
        if (!std::isfinite(data[i]))
          fail("state['", field.name, "'] holds a non-finite value ", data[i], " at flat index ", i);
    access(saved_) = data;
  }

 private:
  // The length an axis must have; an extent not known yet is the axis's own.
  int64_t resolve(Extent extent, int64_t actual) {
    switch (extent) {
      case Extent::dim: return saved_.config.dim;
      case Extent::inducing: {
        const int64_t m = saved_.fast.num_inducing_used;
        if (m < 0 || m > saved_.config.num_inducing)
          fail("state['num_inducing_used'] = ", m, " is outside [0, num_inducing]");
        return m;
      }
      case Extent::four: return 4;
      case Extent::keys: return keys_ ? *keys_ : *(keys_ = actual);
      case Extent::records: return records_ ? *records_ : *(records_ = actual);
    }
    return actual;
  }

  const GPState& state_;
  SavedGP& saved_;
  std::optional<int64_t> keys_, records_;
};

void read_config(const GPState& state, SuccessGPConfig& config) {
  for (const ConfigOption& option : config_options()) {
    const auto it = state.find(option.name);
    OptionValue value;
    if (it == state.end()) {
      if (option.kind != OptionKind::optional_real) fail("state is missing '", option.name, "'");
    } else if (option.kind == OptionKind::integer) {
      value = entry(state, option.name, Kind::integer).integer;
    } else if (option.kind == OptionKind::choice) {
      value = entry(state, option.name, Kind::text).text;
    } else {
      value = real_of(entry(state, option.name, Kind::real));
    }
    set_option(config, option, value);
  }
  validate_config(config);
}

void reject_unknown(const GPState& state) {
  for (const auto& [name, value] : state) {
    if (name == "format_version") continue;
    const bool option = std::any_of(config_options().begin(), config_options().end(),
                                    [&](const ConfigOption& o) { return name == o.name; });
    const bool field = std::any_of(model_fields().begin(), model_fields().end(),
                                   [&](const Field& f) { return name == f.name; });
    if (!option && !field) fail("state has an unknown entry '", name, "'");
  }
}

// ---- versions 1 and 2 -----------------------------------------------------------------------------

StateValue empty_array(Kind kind, std::vector<int64_t> shape) {
  StateValue value;
  value.kind = kind;
  value.shape = std::move(shape);
  return value;
}

// Version 2 named the fixed lengthscale 'lengthscale_fixed' (0 = median heuristic) and the one in
// use 'lengthscale', flagged a fixed prior mean with 'prior_mean_fixed', wrote no features while
// m = 0, and carried the prediction cache (dropped). Version 1 had no calibration.
GPState upgraded(GPState state, int64_t version) {
  if (version == 1) {
    for (const auto& [name, value] : state)
      if (name.rfind("calibration_", 0) == 0) fail("state['", name, "'] belongs to format_version 2, not 1");
    StateValue window, zero;  // a float 0 by default
    window.kind = Kind::integer;
    state["calibration_window"] = window;
    state["calibration_offset"] = zero;
    state["calibration_log_scale"] = zero;
    state["calibration_record_steps"] = empty_array(Kind::integers, {0});
    state["calibration_records"] = empty_array(Kind::reals, {0, 4});
  }
  for (const char* name : {"cache_keys", "cache_embeddings", "cache_features"}) state.erase(name);
  if (state.count("lengthscale")) {
    state["lengthscale_in_use"] = state["lengthscale"];
    state.erase("lengthscale");
  }
  if (state.count("lengthscale_fixed")) {
    const StateValue fixed = entry(state, "lengthscale_fixed", Kind::real);
    if (real_of(fixed) != 0.0) state["lengthscale"] = fixed;
    state.erase("lengthscale_fixed");
  }
  if (state.count("prior_mean_fixed")) {
    if (entry(state, "prior_mean_fixed", Kind::integer).integer == 0) state.erase("prior_mean");
    state.erase("prior_mean_fixed");
  }
  const auto features = state.find("features");
  const auto keys = state.find("keys");
  if (features != state.end() && keys != state.end() && features->second.shape == std::vector<int64_t>{0, 0} &&
      keys->second.shape.size() == 1)
    features->second.shape = {keys->second.shape[0], 0};
  state["format_version"].integer = kSuccessGPStateVersion;
  return state;
}

}  // namespace

GPState write_state(const SavedGP& saved) {
  Writer writer(saved);
  for (const ConfigOption& option : config_options()) {
    const OptionValue value = option.get(saved.config);
    if (!std::holds_alternative<std::monostate>(value)) writer.state[option.name] = option_value(value);
  }
  for (const Field& field : model_fields())
    if (present(field.presence, saved.config)) std::visit([&](auto access) { writer(field, access); }, field.access);
  StateValue& version = writer.state["format_version"];
  version.kind = Kind::integer;
  version.integer = kSuccessGPStateVersion;
  return std::move(writer.state);
}

SavedGP read_state(const GPState& state) {
  const auto version_it = state.find("format_version");
  if (version_it == state.end()) fail("state has no 'format_version': it was not written by SuccessGP.state_dict()");
  const bool has_version = version_it->second.kind == Kind::integer;
  const int64_t version = has_version ? version_it->second.integer : 0;
  if (version < 1 || version > kSuccessGPStateVersion) {
    std::ostringstream got;
    if (has_version) got << version;
    else got << "(" << kind_name(version_it->second.kind) << ")";
    fail("state format_version ", got.str(), " is not supported: vipfast ", VIPFAST_VERSION,
         " reads SuccessGP state format_versions 1 to ", kSuccessGPStateVersion);
  }
  if (version < kSuccessGPStateVersion) {
    SavedGP saved = read_state(upgraded(state, version));
    saved.format_version = version;
    return saved;
  }
  reject_unknown(state);
  SavedGP saved;
  read_config(state, saved.config);
  Reader reader(state, saved);
  for (const Field& field : model_fields()) {
    if (present(field.presence, saved.config)) {
      std::visit([&](auto access) { reader(field, access); }, field.access);
    } else if (state.count(field.name)) {
      fail("state['", field.name, "'] belongs to noise='laplace' only");
    }
  }
  return saved;
}

}  // namespace vipfast::gp
