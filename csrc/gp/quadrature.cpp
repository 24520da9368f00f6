#include "vipfast/gp/quadrature.hpp"

#include <Eigen/Core>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <vector>

namespace vipfast::gp {
namespace {

constexpr int kHermiteNodes = 32;
constexpr int kLegendreNodes = 64;
// Above this latent variance 32-node Gauss-Hermite under-resolves sigma(1 - sigma) (error 1e-4 at
// v = 10, 2e-2 at v = 100); E[p(1-p)] is then integrated in u = sigma(f) by Gauss-Legendre.
constexpr double kHermiteMaxVar = 6.0;

struct QuadratureRule {
  std::vector<double> x, w;
};

// Physicists' Gauss-Hermite rule for weight exp(-x^2): Golub-Welsch nodes polished by Newton on
// the orthonormal Hermite recurrence; weights 2 / p_n'(x)^2 (as numpy.polynomial.hermite.hermgauss).
QuadratureRule make_hermite_rule(int n) {
  Eigen::MatrixXd jacobi = Eigen::MatrixXd::Zero(n, n);
  for (int k = 1; k < n; ++k) jacobi(k, k - 1) = jacobi(k - 1, k) = std::sqrt(k / 2.0);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(jacobi, Eigen::EigenvaluesOnly);
  QuadratureRule rule{std::vector<double>(n), std::vector<double>(n)};
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
    rule.w[i] = 2.0 / (derivative * derivative);
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

// Gauss-Legendre on (0, 1): Newton on the Legendre recurrence from Tricomi's initial guesses.
QuadratureRule make_legendre_rule(int n) {
  QuadratureRule rule{std::vector<double>(n), std::vector<double>(n)};
  for (int i = 0; i < n; ++i) {
    double x = std::cos(kPi * (i + 0.75) / (n + 0.5));
    double derivative = 1.0;
    for (int iteration = 0; iteration < 100; ++iteration) {
      double p_prev = 1.0, p = x;
      for (int j = 2; j <= n; ++j) {
        const double p_next = ((2.0 * j - 1.0) * x * p - (j - 1.0) * p_prev) / j;
        p_prev = p;
        p = p_next;
      }
      derivative = n * (x * p - p_prev) / (x * x - 1.0);
      const double step = p / derivative;
      x -= step;
      if (std::abs(step) < 1e-16) break;
    }
    rule.x[i] = 0.5 * (1.0 - x);  // ascending in (0, 1)
    rule.w[i] = 1.0 / ((1.0 - x * x) * derivative * derivative);
  }
  return rule;
}

const QuadratureRule& hermite_rule() {
  static const QuadratureRule rule = make_hermite_rule(kHermiteNodes);
  return rule;
}

const QuadratureRule& legendre_rule() {
  static const QuadratureRule rule = make_legendre_rule(kLegendreNodes);
  return rule;
}

}  // namespace

double expected_bernoulli_variance(double mean, double var) {
  var = std::max(var, 0.0);
  double total = 0.0;
  if (var <= kHermiteMaxVar) {
    const QuadratureRule& rule = hermite_rule();
    const double spread = std::sqrt(2.0 * var);
    for (int i = 0; i < kHermiteNodes; ++i) total += rule.w[i] * bernoulli_variance(mean + spread * rule.x[i]);
    return std::min(total / std::sqrt(kPi), 0.25);  // the weights sum to sqrt(pi) only up to rounding
  }
  // sigma(1 - sigma) is the logistic density: E = integral over u in (0, 1) of N(mean - logit(u); 0, var).
  const QuadratureRule& rule = legendre_rule();
  for (int i = 0; i < kLegendreNodes; ++i) {
    const double u = rule.x[i];
    const double t = mean - (std::log(u) - std::log1p(-u));
    total += rule.w[i] * std::exp(-0.5 * t * t / var);
  }
  return std::min(total / std::sqrt(2.0 * kPi * var), 0.25);
}

}  // namespace vipfast::gp
