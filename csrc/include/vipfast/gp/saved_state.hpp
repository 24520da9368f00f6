// A saved SuccessGP as plain values, one member per state entry: each object saves its part and
// restores from it; gp/state_io.hpp converts the whole to and from a GPState.
#pragma once

#include "vipfast/success_gp.hpp"

#include <cstdint>
#include <vector>

namespace vipfast::gp {

struct SavedStore {
  int64_t step = 0;
  int64_t seq_counter = 0;
  double lengthscale_in_use = -1.0;  // -1: none yet
  int64_t lengthscale_provisional = 0;
  int64_t lengthscale_count = 0;
  int64_t lengthscale_inserts = 0;
  std::vector<uint64_t> keys;          // (n)
  std::vector<double> embeddings;      // (n, dim), unit rows
  std::vector<double> successes;       // (n) forgotten sums
  std::vector<double> trials;          // (n)
  std::vector<int64_t> observed_step;  // (n)
  std::vector<int64_t> recency;        // (n)
  std::vector<double> linearisation;   // (n) laplace only
};

struct SavedFastEngine {
  int64_t num_inducing_used = 0;               // m; 0 = not built
  std::vector<double> inducing_points;         // (m, dim)
  std::vector<double> features;                // (n, m)
  std::vector<double> information;             // (m, m), lower triangle
  std::vector<double> information_targets;     // (m)
  std::vector<double> information_weights;     // (m)
  double coverage_reference = 0.0;
  double coverage_average = 0.0;
  int64_t inducing_selected_at = 0;
};

struct SavedCalibration {
  double offset = 0.0;
  double log_scale = 0.0;
  std::vector<int64_t> record_steps;  // (r)
  std::vector<double> records;        // (r, 4): mean, var, successes, trials
};

struct SavedGP {
  int64_t format_version = kSuccessGPStateVersion;  // of the state it was read from
  SuccessGPConfig config;
  SavedStore store;
  SavedFastEngine fast;
  SavedCalibration calibration;
};

}  // namespace vipfast::gp
