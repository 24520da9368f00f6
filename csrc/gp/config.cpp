// SuccessGPConfig: the option table, the names of the choices, and every value check.
#include "vipfast/fail.hpp"
#include "vipfast/gp/kernel.hpp"
#include "vipfast/success_gp.hpp"

#include <cmath>

namespace vipfast {
namespace {

// Recalibration keeps every outcome of its window, W x rows per observe: the bound caps the W factor.
constexpr int64_t kMaxCalibrationWindow = 1000;

// The names of an enum's values, in the order of its enumerators.
template <class Enum>
const std::vector<std::string>& names();
template <>
const std::vector<std::string>& names<GPMode>() {
  static const std::vector<std::string> list{"exact", "fast", "auto"};
  return list;
}
template <>
const std::vector<std::string>& names<NoiseModel>() {
  static const std::vector<std::string> list{"binomial", "fixed", "laplace"};
  return list;
}
template <>
const std::vector<std::string>& names<ProbaMethod>() {
  static const std::vector<std::string> list{"moderated", "plugin"};
  return list;
}

template <auto Member>
ConfigOption integer_option(const char* name) {
  return {name, OptionKind::integer, {},
          [](const SuccessGPConfig& c) -> OptionValue { return c.*Member; },
          [](SuccessGPConfig& c, const OptionValue& v) { c.*Member = std::get<int64_t>(v); }};
}

template <auto Member>
ConfigOption real_option(const char* name) {
  return {name, OptionKind::real, {},
          [](const SuccessGPConfig& c) -> OptionValue { return c.*Member; },
          [](SuccessGPConfig& c, const OptionValue& v) { c.*Member = std::get<double>(v); }};
}

template <auto Member>
ConfigOption optional_real_option(const char* name) {
  return {name, OptionKind::optional_real, {},
          [](const SuccessGPConfig& c) -> OptionValue {
            if (const auto& value = c.*Member) return *value;
            return std::monostate{};
          },
          [](SuccessGPConfig& c, const OptionValue& v) {
            if (std::holds_alternative<double>(v)) c.*Member = std::get<double>(v);
            else c.*Member = std::nullopt;
          }};
}

template <class Enum, Enum SuccessGPConfig::*Member>
ConfigOption choice_option(const char* name) {
  return {name, OptionKind::choice, names<Enum>(),
          [](const SuccessGPConfig& c) -> OptionValue { return names<Enum>()[static_cast<size_t>(c.*Member)]; },
          [](SuccessGPConfig& c, const OptionValue& v) {
            const auto& list = names<Enum>();
            const std::string& text = std::get<std::string>(v);
            for (size_t i = 0; i < list.size(); ++i)
              if (list[i] == text) {
                c.*Member = static_cast<Enum>(i);
                return;
              }
            std::string options;
            for (const std::string& option : list) options += (options.empty() ? "'" : ", '") + option + "'";
            fail("must be one of ", options, "; got '", text, "'");
          }};
}

bool holds_kind(const OptionValue& value, OptionKind kind) {
  switch (kind) {
    case OptionKind::integer: return std::holds_alternative<int64_t>(value);
    case OptionKind::real: return std::holds_alternative<double>(value);
    case OptionKind::optional_real:
      return std::holds_alternative<double>(value) || std::holds_alternative<std::monostate>(value);
    case OptionKind::choice: return std::holds_alternative<std::string>(value);
  }
  return false;
}

const char* kind_name(OptionKind kind) {
  switch (kind) {
    case OptionKind::integer: return "an int";
    case OptionKind::real: return "a float";
    case OptionKind::optional_real: return "a float or None";
    case OptionKind::choice: return "a str";
  }
  return "?";
}

}  // namespace

const char* gp_mode_name(GPMode mode) { return names<GPMode>()[static_cast<size_t>(mode)].c_str(); }

const std::vector<ConfigOption>& config_options() {
  using C = SuccessGPConfig;
  static const std::vector<ConfigOption> options{
      integer_option<&C::dim>("dim"),
      optional_real_option<&C::lengthscale>("lengthscale"),
      real_option<&C::signal_var>("signal_var"),
      optional_real_option<&C::prior_mean>("prior_mean"),
      real_option<&C::forgetting>("forgetting"),
      integer_option<&C::capacity>("capacity"),
      choice_option<GPMode, &C::mode>("mode"),
      choice_option<NoiseModel, &C::noise>("noise"),
      real_option<&C::jitter>("jitter"),
      real_option<&C::clip>("clip"),
      choice_option<ProbaMethod, &C::proba>("proba"),
      integer_option<&C::num_inducing>("num_inducing"),
      integer_option<&C::auto_exact_max>("auto_exact_max"),
      integer_option<&C::calibration_window>("calibration_window"),
  };
  return options;
}

void set_option(SuccessGPConfig& config, const ConfigOption& option, const OptionValue& value) {
  if (!holds_kind(value, option.kind)) fail(option.name, " must be ", kind_name(option.kind));
  try {
    option.set(config, value);
  } catch (const std::invalid_argument& error) {
    fail(option.name, " ", error.what());
  }
}

void validate_config(const SuccessGPConfig& c) {
  if (c.dim < 1) fail("dim must be >= 1, got ", c.dim);
  if (c.lengthscale) {
    const double ell = *c.lengthscale;
    if (!(std::isfinite(ell) && ell > 0))
      fail("lengthscale must be a positive number (or None for the median heuristic), got ", ell);
    if (ell < gp::kMinLengthscale) fail("lengthscale must be >= ", gp::kMinLengthscale, ", got ", ell);
  }
  if (!(std::isfinite(c.signal_var) && c.signal_var > 0)) fail("signal_var must be positive and finite, got ", c.signal_var);
  if (c.prior_mean && !std::isfinite(*c.prior_mean)) fail("prior_mean must be finite, got ", *c.prior_mean);
  if (!(c.forgetting > 0 && c.forgetting <= 1)) fail("forgetting must lie in (0, 1], got ", c.forgetting);
  if (c.capacity < 1) fail("capacity must be >= 1, got ", c.capacity);
  if (c.capacity > (int64_t{1} << 40) / c.dim) fail("capacity * dim = ", c.capacity, " * ", c.dim, " is too large");
  if (!(std::isfinite(c.jitter) && c.jitter >= 0)) fail("jitter must be finite and >= 0, got ", c.jitter);
  if (c.noise == NoiseModel::fixed && !(c.jitter > 0))
    fail("noise='fixed' needs jitter > 0 (it is the observation noise variance), got ", c.jitter);
  if (!(c.clip > 0 && c.clip < 0.5)) fail("clip must lie in (0, 0.5), got ", c.clip);
  if (c.num_inducing < 1 || c.num_inducing > 65536) fail("num_inducing must lie in [1, 65536], got ", c.num_inducing);
  if (c.auto_exact_max < 0) fail("auto_exact_max must be >= 0, got ", c.auto_exact_max);
  if (c.calibration_window < 0 || c.calibration_window > kMaxCalibrationWindow)
    fail("calibration_window must lie in [0, ", kMaxCalibrationWindow, "], got ", c.calibration_window);
}

}  // namespace vipfast
