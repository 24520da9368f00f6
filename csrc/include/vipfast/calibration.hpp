// Online recalibration of predicted logits (docs/success_gp.md, "Recalibration").
//
// A success GP ranks prompts well but compresses their logits: its evidence lags a policy that
// keeps improving, and its prior pulls prompts that never (or always) succeed towards the mean.
// Each outcome therefore first scores the prediction that was made for it before it was seen:
// a record (step, mean mu and variance v of the logit, successes k, trials n). The affine map
// f -> a + b f (b > 0) is fitted by maximum a posteriori over the records of the last `window`
// steps, each weighted (1 - 1/window)^age:
//   maximise  sum_r w_r [k_r log s(z_r) + (n_r - k_r) log s(-z_r)] - (a^2 + (log b)^2) / 2,
//   z_r = (a + b mu_r) / sqrt(1 + pi b^2 v_r / 8),
// the moderated predictive of the mapped logit, whose posterior is N(a + b mu, b^2 v). The
// Gaussian prior at the identity keeps the fit finite when every outcome is a failure.
// No Python in here: errors are std::invalid_argument (vipfast/fail.hpp).
#pragma once

#include <cstdint>
#include <vector>

namespace vipfast {

class LogitCalibration {
 public:
  struct Record {
    int64_t step;
    double mean, var, successes, trials;
  };

  // window >= 0 (validate_config checks it); 0 = disabled.
  explicit LogitCalibration(int64_t window = 0) : window_(window) {}

  bool enabled() const { return window_ > 0; }
  double offset() const { return offset_; }
  double log_scale() const { return log_scale_; }
  const std::vector<Record>& records() const { return records_; }

  // The calibration once outcomes observed at `step` of predictions (mean, var) made before them
  // are recorded (rows with trials == 0 skipped): records older than the window dropped, the map
  // refitted. *this is unchanged, so an observe that fails later keeps it.
  LogitCalibration recorded(int64_t step, int64_t count, const double* mean, const double* var,
                            const double* successes, const int64_t* trials) const;
  // mean <- a + b mean, var <- b^2 var (identity while disabled or before any record).
  void apply(int64_t count, double* mean, double* var) const;
  // A saved calibration, restored as it was (no refit).
  void restore(double offset, double log_scale, std::vector<Record> records);

 private:
  void fit(int64_t step);

  int64_t window_;
  double offset_ = 0.0;
  double log_scale_ = 0.0;
  std::vector<Record> records_;
};

}  // namespace vipfast
