// The runtime's hidden helpers (common/helper_entry.hpp): what runtime re-executes aishell for
// inside a user namespace. cli dispatches them from kHelpers; the spawners pass the entry itself
// to run_in_userns / spawn_in_userns.
#pragma once

#include <string>
#include <vector>

#include "common/helper_entry.hpp"
#include "runtime/launch.hpp"
#include "runtime/reown.hpp"
#include "runtime/userns_exec.hpp"
#include "runtime/userns_holder.hpp"

namespace aishell::runtime {

// `__rm DIR`: remove_tree_here(DIR), for the files of a run the caller cannot remove on the host.
int remove_tree_main(const std::vector<std::string>& args);

// Unpack image layers so owners land as mapped ids (launch.hpp).
inline constexpr HelperEntry kUnpackLayers{"__unpack", unpack_layers_here};
// Layer copies re-owned for --userns=keep-id in subuid mode (reown.hpp).
inline constexpr HelperEntry kReownLayers{"__reown", reown_layers_here};
// Remove a tree whose files may belong to sub ids (userns_exec.hpp).
inline constexpr HelperEntry kRemoveTree{"__rm", remove_tree_main};
// The user namespace holder that subuid-mode runs join (userns_holder.hpp).
inline constexpr HelperEntry kHoldUserns{"__userns-hold", hold_userns_here};

inline constexpr HelperEntry kHelpers[] = {kUnpackLayers, kReownLayers, kRemoveTree, kHoldUserns};

}  // namespace aishell::runtime
