// The native core's two error paths, each with a message built from its parts (numbers at full
// precision):
// - fail(): the caller's input is invalid: std::invalid_argument, ValueError in Python;
// - numerical_failure(): an internal computation failed on valid input (a factorisation that is
//   not positive definite, say): NumericalFailure, a std::runtime_error, RuntimeError in Python.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace vipfast {

class NumericalFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Parts>
std::string message_of(const Parts&... parts) {
  std::ostringstream message;
  message.precision(17);
  (message << ... << parts);
  return message.str();
}

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw std::invalid_argument(message_of(parts...));
}

template <class... Parts>
[[noreturn]] void numerical_failure(const Parts&... parts) {
  throw NumericalFailure(message_of(parts...));
}

}  // namespace vipfast
