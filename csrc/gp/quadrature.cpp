#include "vipfast/gp/quadrature.hpp"

#include <Eigen/Core>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <vector>

namespace vipfast::gp {
namespace {

constexpr int kHermiteNodes = 32;

// Gauss-Hermite nodes x_i and the weights w_i exp(x_i^2) that integrate a function itself, not a
// function times exp(-x^2).
struct HermiteRule {
  std::vector<double> x, w;
};

HermiteRule make_hermite_rule(int n) {
  Eigen::MatrixXd jacobi = Eigen::MatrixXd::Zero(n, n);
  for (int k = 1; k < n; ++k) jacobi(k, k - 1) = jacobi(k - 1, k) = std::sqrt(k / 2.0);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(jacobi, Eigen::EigenvaluesOnly);
  HermiteRule rule{std::vector<double>(n), std::vector<double>(n)};
  for (int i = 0; i < n; ++i) {
    double x = solver.eigenvalues()(i);
    double derivative = 1.0;
    for (int iteration = 0; iteration < 3; ++iteration) {
      double p_prev = 0.0, p = std::pow(kPi, -0.25);
      for (int j = 0; j < n; ++j) {  // p_{j+1} = x sqrt(2/(j+1)) p_j - sqrt(j/(j+1)) p_{j-1}
        const double p_next = x * std::sqrt(2.0 / (j + 1)) * p - std::sqrt(static_cast<double>(j) / (j + 1)) * p_prev;
        p_prev = p;
        p = p_next;
      }
      derivative = std::sqrt(2.0 * n) * p_prev;
      x -= p / derivative;
    }
    rule.x[i] = x;
    rule.w[i] = 2.0 / (derivative * derivative) * std::exp(x * x);
  }
  for (int i = 0; i < n / 2; ++i) {  // exact symmetry
    const double x = 0.5 * (rule.x[n - 1 - i] - rule.x[i]);
    const double w = 0.5 * (rule.w[n - 1 - i] + rule.w[i]);
    rule.x[i] = -x;
    rule.x[n - 1 - i] = x;
    rule.w[i] = rule.w[n - 1 - i] = w;
  }
  return rule;
}

const HermiteRule& hermite_rule() {
  static const HermiteRule rule = make_hermite_rule(kHermiteNodes);
  return rule;
}

// log of sigmoid(f) (1 - sigmoid(f)) N(f; mean, var), up to the constant -log sqrt(2 pi var).
double log_integrand(double f, double mean, double var) {
  const double a = std::abs(f);
  return -a - 2.0 * std::log1p(std::exp(-a)) - 0.5 * (f - mean) * (f - mean) / var;
}

// The mode of the integrand: its log is strictly concave with slope 1 - 2 sigmoid(f) - (f - mean) / var, which
// has the sign of mean at 0 and the opposite sign at mean, so the mode lies between them. Newton inside that
// shrinking bracket, from the mode of the tails' shape (|f| large: mean -+ var) or the centre's (f near 0:
// mean / (1 + var / 4)), whichever is farther from 0; the rule needs the mode only to a small part of its scale.
double integrand_mode(double mean, double var) {
  double low = std::min(mean, 0.0), high = std::max(mean, 0.0);
  double f = std::copysign(std::max(std::abs(mean) - var, std::abs(mean) / (1.0 + 0.25 * var)), mean);
  for (int iteration = 0; iteration < 100 && high > low; ++iteration) {
    const double slope = 1.0 - 2.0 * sigmoid(f) - (f - mean) / var;
    if (slope > 0) low = f; else high = f;
    double next = f + slope / (2.0 * bernoulli_variance(f) + 1.0 / var);
    if (!(next > low && next < high)) next = 0.5 * (low + high);
    if (std::abs(next - f) <= 1e-9 * (1.0 + std::abs(f))) return next;
    f = next;
  }
  return f;
}

}  // namespace

double expected_bernoulli_variance(double mean, double var) {
  if (std::isinf(mean)) return 0.0;
  if (!(var > 1e-12)) return bernoulli_variance(mean);  // the error is O(var)
  // Adaptive Gauss-Hermite: the rule is centred at the integrand's mode and scaled to its curvature there, so
  // the nodes sit where the mass is however far the posterior lies from f = 0 and however wide it is.
  const double mode = integrand_mode(mean, var);
  const double scale = std::sqrt(2.0 / (2.0 * bernoulli_variance(mode) + 1.0 / var));
  const HermiteRule& rule = hermite_rule();
  double total = 0.0;
  for (int i = 0; i < kHermiteNodes; ++i) {
    const double f = mode + scale * rule.x[i];
    total += rule.w[i] * std::exp(log_integrand(f, mean, var));
  }
  return std::min(total * scale / std::sqrt(2.0 * kPi * var), 0.25);
}

}  // namespace vipfast::gp
