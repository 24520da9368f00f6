// Exact rollout allocation: minimise sum_q cost_q(n_q) s.t. sum_q n_q = budget,
// min_rollouts <= n_q <= max_rollouts, n_q integer, for separable discretely convex costs.
// No Python in here: errors are std::invalid_argument.
#pragma once

#include <cstdint>
#include <string>

namespace vipfast {

// Variance curves phi(n) of the policy-gradient estimators (up to the shared constant 4 sigma_Z^2).
enum class Estimator { rloo, drgrpo, grpo };

// One row per estimator: the only place its name, its domain and its curve are written down.
struct EstimatorSpec {
  Estimator estimator;
  const char* name;
  int64_t min_rollouts;  // smallest n on which phi is defined and discretely convex
  const char* variance;  // phi(n); grpo has no closed form and uses drgrpo's curve
};

inline constexpr EstimatorSpec kEstimators[] = {
    {Estimator::rloo, "rloo", 2, "1/(n-1)"},
    {Estimator::drgrpo, "drgrpo", 3, "(n-1)/n^2"},
    {Estimator::grpo, "grpo", 3, "(n-1)/n^2"},
};

const EstimatorSpec& estimator_spec(Estimator estimator);
Estimator parse_estimator(const std::string& name);
double estimator_variance(Estimator estimator, double n);

struct Bounds {
  int64_t num_prompts;
  int64_t budget;
  int64_t min_rollouts;
  int64_t max_rollouts;
};

// How each prompt's cost is given. Exactly one of the three forms:
//   estimator      cost_q(n) = w_q * phi_estimator(n)
//   shared curve   cost_q(n) = w_q * curve[n - min]            curve: (max - min + 1)
//   cost table     cost_q(n) = w_q * table[q, n - min]         table: (Q, max - min + 1), row-major
struct CostModel {
  const double* weights = nullptr;  // (Q); null means all ones (tables only)
  Estimator estimator = Estimator::rloo;
  const double* curve = nullptr;
  const double* table = nullptr;
};

// Exact integer optimum; ties go to the lower count, then the lower prompt index. counts: (Q).
void allocate(const CostModel& model, const Bounds& bounds, int64_t* counts);

// Optimum of the continuous relaxation. For estimators the curve's closed form is used; for
// curves and tables the relaxation of the piecewise-linear interpolant, whose optimum is
// integral, so the exact integer optimum is returned. counts: (Q).
void allocate_relaxed(const CostModel& model, const Bounds& bounds, double* counts);

// sum_q cost_q(n_q) for any counts in [min, max] (max may be INT64_MAX for estimators).
double allocation_objective(const CostModel& model, const Bounds& bounds, const int64_t* counts);

}  // namespace vipfast
