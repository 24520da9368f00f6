// The estimator table's lookups, and the estimators' unit gains u(n) = phi(n) - phi(n+1).
#include <string>
#include <vector>

#include "internal.hpp"
#include "vipfast/fail.hpp"

namespace vipfast {

const EstimatorSpec& estimator_spec(Estimator estimator) {
  for (const EstimatorSpec& spec : kEstimators)
    if (spec.estimator == estimator) return spec;
  fail("unknown estimator id ", static_cast<int>(estimator));
}

Estimator parse_estimator(const std::string& name) {
  std::string options;
  for (const EstimatorSpec& spec : kEstimators) {
    if (name == spec.name) return spec.estimator;
    options += std::string(options.empty() ? "'" : ", '") + spec.name + "'";
  }
  fail("unknown estimator '", name, "'; expected one of ", options);
}

double estimator_variance(Estimator estimator, double n) {
  if (estimator == Estimator::rloo) return 1.0 / (n - 1.0);
  return (n - 1.0) / (n * n);
}

namespace allocation {

double estimator_unit_gain(Estimator estimator, double n) {
  // rloo: 1/(n-1) - 1/n = 1 / ((n-1) n).
  if (estimator == Estimator::rloo) return 1.0 / ((n - 1.0) * n);
  // (n-1)/n^2 - n/(n+1)^2 = (n^2-n-1) / (n^2 (n+1)^2) = 1 / (n^2 + 3n + 1 + (2n+1)^2 / (n^2-n-1)):
  // the polynomial part grows by 2n+4 per step while the fraction shrinks by less than 3, so
  // the rounded denominator never decreases (checked exhaustively up to 2^27 and sampled to 2^63).
  const double a = 2.0 * n + 1.0;
  return 1.0 / ((n * (n + 3.0) + 1.0) + a * a / (n * n - n - 1.0));
}

namespace {

std::vector<double> tabulate(Estimator estimator) {
  std::vector<double> table(static_cast<size_t>(kTabulatedRollouts), 0.0);
  for (int64_t n = estimator_spec(estimator).min_rollouts; n < kTabulatedRollouts; ++n)
    table[static_cast<size_t>(n)] = estimator_unit_gain(estimator, static_cast<double>(n));
  return table;
}

}  // namespace

const double* estimator_unit_gain_table(Estimator estimator) {
  static const std::vector<double> rloo = tabulate(Estimator::rloo);
  static const std::vector<double> drgrpo = tabulate(Estimator::drgrpo);
  return estimator == Estimator::rloo ? rloo.data() : drgrpo.data();  // grpo uses drgrpo's curve
}

}  // namespace allocation
}  // namespace vipfast
