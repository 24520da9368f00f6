// The logistic function and its expectations under a Gaussian posterior of the logit.
#pragma once

#include <cmath>

namespace vipfast::gp {

constexpr double kPi = 3.141592653589793238462643383279502884;

inline double sigmoid(double f) {
  if (f >= 0) return 1.0 / (1.0 + std::exp(-f));
  const double e = std::exp(f);
  return e / (1.0 + e);
}

// sigmoid(f) (1 - sigmoid(f)) without overflow.
inline double bernoulli_variance(double f) {
  const double e = std::exp(-std::abs(f));
  const double d = 1.0 + e;
  return e / (d * d);
}

// sigmoid(f), sigmoid(-f) and their product from one exponential, for loops that need all three.
struct Logistic {
  double p, q, w;
};

inline Logistic logistic(double f) {
  const double e = std::exp(-std::abs(f)), d = 1.0 + e;
  const double small = e / d, large = 1.0 / d;
  return f >= 0 ? Logistic{large, small, small / d} : Logistic{small, large, small / d};
}

// sigmoid(mean / sqrt(1 + pi var / 8)) ~ E[sigmoid(f)] for f ~ N(mean, var) (MacKay 1992).
inline double moderated_sigmoid(double mean, double var) { return sigmoid(mean / std::sqrt(1.0 + kPi * var / 8.0)); }

// E[sigmoid(f)(1 - sigmoid(f))] for f ~ N(mean, var): 32-node Gauss-Hermite centred at the integrand's mode
// and scaled to its curvature there (relative error below 2e-6 for |mean| <= 10, 3e-5 for |mean| <= 15).
double expected_bernoulli_variance(double mean, double var);

}  // namespace vipfast::gp
