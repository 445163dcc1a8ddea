// Running an aishell helper inside a user namespace with the store's id mapping: used to unpack
// layers (so owners land as mapped ids) and to remove a run's upper layer (whose files may be
// owned by sub ids the caller cannot delete on the host). The helper is aishell itself,
// re-executed from /proc/self/exe with a hidden subcommand; it never runs container code.
#pragma once

#include <string>
#include <vector>

#include "runtime/idmap.hpp"

namespace aishell::runtime {

// clone(CLONE_NEWUSER), maps written by the parent, then execve(/proc/self/exe, args) as root of
// the namespace. Returns the helper's exit status; throws Error when it cannot be started.
int run_in_userns(const IdMapping& mapping, const std::vector<std::string>& args);

// Removes dir; files the caller cannot remove on the host are removed inside the namespace by
// `aishell __rm DIR` (its body: remove_tree_here()).
void remove_tree(const IdMapping& mapping, const std::string& dir);
int remove_tree_here(const std::string& dir) noexcept;

}  // namespace aishell::runtime
