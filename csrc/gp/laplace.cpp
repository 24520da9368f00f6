#include "vipfast/gp/laplace.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "vipfast/fail.hpp"
#include "vipfast/gp/quadrature.hpp"

namespace vipfast::gp {
namespace {

// Bisection alone reaches any mode from any bracket of doubles in about 2,100 steps.
constexpr int kMaxIterations = 2200;
constexpr double kTolerance = 1e-9;

void check_row(int64_t i, double m, double v, double k, double n) {
  if (!std::isfinite(m)) fail("prior_mean[", i, "] must be finite, got ", m);
  if (!(std::isfinite(v) && v > 0)) fail("prior_var[", i, "] must be finite and > 0, got ", v);
  if (!(std::isfinite(n) && n >= 0)) fail("trials[", i, "] must be finite and >= 0, got ", n);
  if (!(std::isfinite(k) && k >= 0 && k <= n))
    fail("successes[", i, "] must lie in [0, trials[", i, "]] = [0, ", n, "], got ", k);
}

// The slope of k log σ(f) + (n − k) log σ(−f), as k σ(−f) − (n − k) σ(f): k − n σ(f) would lose the digits
// of n σ(−f) when σ(f) rounds near 1 and n is large.
double count_slope(const Logistic& s, double k, double n) { return k * s.q - (n - k) * s.p; }

// 1 / (n σ(f)σ(−f) + 1/V), never above V: the sum is infinite where V is subnormal, and its reciprocal
// rounds above V where V is near the largest double.
double posterior_variance(double f, double v, double n) {
  const double precision = n * logistic(f).w + 1.0 / v;
  return std::isinf(precision) ? v : std::min(v, 1.0 / precision);
}

}  // namespace

// The log posterior is strictly concave and its slope at m is g₀ = k σ(−m) − (n − k) σ(m); past m on g₀'s
// side the slope is at most |g₀| − |f − m|/V in size, so the mode lies between m and m + V g₀. Newton's
// method inside that shrinking bracket, bisecting when a step would leave it or does not halve the one
// before last (Numerical Recipes' rtsafe), converges from any start, also on the logistic's flat tails.
// It stops when a step is below 1e-9 of the posterior's sd (or of 1 + |f|, whichever is smaller), rounds
// to nothing, or the bracket closes.
LaplacePosterior laplace_posterior(double m, double v, double k, double n) {
  constexpr double kLargest = std::numeric_limits<double>::max();
  const double far = std::clamp(m + v * count_slope(logistic(m), k, n), -kLargest, kLargest);
  double low = std::min(m, far), high = std::max(m, far), f = m;
  double step = high - low, step_before = step;
  for (int iteration = 0; iteration < kMaxIterations && high > low; ++iteration) {
    const Logistic s = logistic(f);
    const double slope = count_slope(s, k, n) - (f - m) / v;
    if (slope == 0) break;
    if (slope > 0) low = f; else high = f;
    const double curvature = n * s.w + 1.0 / v;
    const double newton = f + slope / curvature;
    const bool bisect = !(newton >= low && newton <= high) || std::abs(2.0 * slope) > std::abs(step_before * curvature);
    const double next = bisect ? 0.5 * low + 0.5 * high : newton;  // no overflow at ±DBL_MAX
    step_before = step;
    step = next - f;
    f = next;
    const double scale = std::min(1.0 + std::abs(f), 1.0 / std::sqrt(curvature));
    if (step == 0 || std::abs(step) <= kTolerance * scale) break;
  }
  return {f, posterior_variance(f, v, n)};
}

void laplace_posteriors(int64_t count, const double* prior_mean, const double* prior_var, const double* successes,
                        const double* trials, double* mean, double* var) {
  for (int64_t i = 0; i < count; ++i) check_row(i, prior_mean[i], prior_var[i], successes[i], trials[i]);
  for (int64_t i = 0; i < count; ++i) {
    const LaplacePosterior posterior = laplace_posterior(prior_mean[i], prior_var[i], successes[i], trials[i]);
    mean[i] = posterior.mean;
    var[i] = posterior.var;
  }
}

}  // namespace vipfast::gp
