// Pieces shared by the allocation sources: checked inputs, unit gains, scratch buffers.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "vipfast/allocation.hpp"

namespace vipfast::allocation {

// Sums of counts: Q * m can pass 2^63 when an estimator's range is cut only by a huge budget.
__extension__ typedef __int128 Total;

// Doubles mapped to integers in the same order (-0 just below +0): bisecting the integers
// halves the number of doubles in between, whatever their signs and exponents. One octave of
// positive doubles spans 2^52 keys.
inline int64_t order_key(double x) {
  int64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits ^ ((bits >> 63) & std::numeric_limits<int64_t>::max());
}

inline double from_order_key(int64_t key) {
  const int64_t bits = key ^ ((key >> 63) & std::numeric_limits<int64_t>::max());
  double x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// ---------------------------------------------------------------------------------------
// Inputs (validation.cpp). Every check raises std::invalid_argument naming the value.
// ---------------------------------------------------------------------------------------

// Feasibility of the bounds without forming Q * max (it may overflow while the budget is fine).
void check_bounds(const Bounds& bounds);
void check_estimator_domain(Estimator estimator, int64_t min_rollouts);
// First bad weight (non-finite or negative) as an error; called once a single pass found one.
[[noreturn]] void fail_on_weights(const double* weights, int64_t num_prompts);
void check_weights(const double* weights, int64_t num_prompts);

// Marginal gains phi(n) - phi(n+1) of one row phi(L..L+m), checked to be finite and
// discretely convex (and non-negative when `non_increasing`); differences of a few ulps from
// rounding are projected away so the gains are exactly non-increasing. prompt < 0: shared curve.
void row_gains(const double* row, int64_t width, int64_t min_rollouts, bool non_increasing, int64_t prompt,
               double* gains);
// One vectorised pass over a row phi(L..L+m): whether it is finite with differences already
// exactly non-increasing (then row_gains would change nothing), and how many differences, times
// `weight`, exceed lambda (the row's count at lambda when it is exactly convex).
struct RowScan {
  bool exactly_convex;
  int64_t above;
};
RowScan scan_row(const double* row, int64_t width, double weight, double lambda);

// ---------------------------------------------------------------------------------------
// Unit gains of the estimators (estimators.cpp): u(n) = phi(n) - phi(n+1).
// ---------------------------------------------------------------------------------------

// Every floating-point step of these formulas is monotone in n, so the computed gains never
// rise with n: threshold counts stay prefix counts at any n.
double estimator_unit_gain(Estimator estimator, double n);
// u(n) for n < kTabulatedRollouts (entries below the domain unused), built once per process.
constexpr int64_t kTabulatedRollouts = int64_t{1} << 14;
const double* estimator_unit_gain_table(Estimator estimator);

// ---------------------------------------------------------------------------------------
// The shared model's pass over all prompts with AVX2 (count_avx2.cpp).
// ---------------------------------------------------------------------------------------

struct GuessedCounts {
  const double* weights;     // (Q)
  const double* roots;       // (Q) sqrt(weights)
  const double* unit_gains;  // readable at [-1, cap]
  int64_t num_prompts, steps, min_rollouts;
  int64_t cap;                               // guesses are capped here (<= steps, < 2^31)
  double lambda, inverse_root;               // x = root * inverse_root = sqrt(w / lambda)
  double alpha, beta, gamma;                 // guess = floor(alpha x + beta + gamma / (x + 1)), clamped
  int64_t* counts;                           // (Q) out: min_rollouts + guess
  double* first_left;                        // (Q) out: the gains next to the guess
  double* last_taken;                        // (Q)
  double* most_left;                         // (Q / 16) out: their extremes per block of 16
  double* least_taken;                       // (Q / 16)
};

bool guessed_counts_available();
// For the prompts in whole blocks of 16: writes each guess and the gains on either side of it (and
// their extremes per block), lists in `off` the prompts whose guess is not their count, and returns
// the sum of the guesses.
int64_t guessed_counts(const GuessedCounts& in, std::vector<int64_t>& off);

// ---------------------------------------------------------------------------------------
// Scratch buffers reused across calls on one thread: fresh multi-megabyte allocations page-fault
// on every call, which at Q = 65536 costs as much as the whole solve.
// ---------------------------------------------------------------------------------------

// A prompt whose count differs between the ends of the search's bracket: `fewer` at the larger
// multiplier, `more` at the smaller; `probe` is its count at the latest probe.
struct Entry {
  int64_t prompt, fewer, more, probe;
};

// One unit that may be placed last: the gain of step `step` of entries[entry].
struct Candidate {
  double gain;
  int64_t entry, step;
};

struct Workspace {
  std::vector<double> roots;           // (Q) sqrt of the weights
  std::vector<double> scaled_weights;  // (Q) weights times a power of two, when their range needs it
  std::vector<double> unit_gains;      // (m) a shared curve's gains
  std::vector<double> projected;       // rows of a table whose rounding was projected away
  std::vector<int64_t> projected_row;  // (Q) row of `projected` for each prompt, or -1
  std::vector<double> samples;
  std::vector<double> first_left, last_taken;   // (Q) see Boundary
  std::vector<double> most_left, least_taken;   // (Q / 16 + 1)
  std::vector<double> window;                   // (Q, 8) a table's gains around each count
  std::vector<int64_t> window_start;            // (Q)
  std::vector<Entry> entries;
  std::vector<Candidate> candidates;
  std::vector<int64_t> off;  // prompts whose guessed count is off
};

Workspace& thread_workspace();
// Returns oversized buffers to the allocator so one huge call does not pin its memory.
void trim_workspace(Workspace& workspace);

// Exponent e such that the largest gain, largest_weight * 2^e * largest_unit_gain, is near 1
// (weights stay within 2^+-1000), or 0 when the gains' scale is already safe. The optimum does
// not change with the weights' scale, and a power of two rounds every product the same way.
int weight_exponent(double largest_weight, double largest_unit_gain);

}  // namespace vipfast::allocation
