// The Laplace approximation of a logit's posterior: a Gaussian prior times binomial counts.
#pragma once

#include <cstdint>

namespace vipfast::gp {

struct LaplacePosterior {
  double mean;
  double var;
};

// N(f̂, 1 / (n σ(f̂) σ(−f̂) + 1/V)) at the mode f̂ of k log σ(f) + (n − k) log σ(−f) − (f − m)² / (2V).
// Counts may be fractional (forgotten); inputs are not checked here.
LaplacePosterior laplace_posterior(double prior_mean, double prior_var, double successes, double trials);

// Elementwise over `count` rows, every row checked first: finite m, finite V > 0, finite 0 <= k <= n.
void laplace_posteriors(int64_t count, const double* prior_mean, const double* prior_var, const double* successes,
                        const double* trials, double* mean, double* var);

}  // namespace vipfast::gp
