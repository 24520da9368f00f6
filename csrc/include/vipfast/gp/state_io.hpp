// A SavedGP to and from a GPState (named numbers, strings and arrays), through one table of
// entries: the configuration options (config_options()) and the model's own entries.
#pragma once

#include "vipfast/gp/saved_state.hpp"
#include "vipfast/success_gp.hpp"

namespace vipfast::gp {

GPState write_state(const SavedGP& saved);
// Checks the format version (states of versions 1 and 2 are upgraded first), that every entry is
// known, present where it belongs, of its kind and shape, and finite; the values themselves are
// checked by the objects restored from them.
SavedGP read_state(const GPState& state);

}  // namespace vipfast::gp
