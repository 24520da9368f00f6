// The native core's one error path: std::invalid_argument with a message built from its parts
// (numbers at full precision); the bindings turn it into ValueError.
#pragma once

#include <sstream>
#include <stdexcept>

namespace vipfast {

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream message;
  message.precision(17);
  (message << ... << parts);
  throw std::invalid_argument(message.str());
}

}  // namespace vipfast
