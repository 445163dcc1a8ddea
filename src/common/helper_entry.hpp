// A hidden helper subcommand: aishell re-executes itself (/proc/self/exe NAME ARGS...) to do one
// job in another context, usually inside a user namespace. The module that starts a helper
// declares it (name and body) in its own helpers.hpp; cli dispatches argv[1] from the table of
// all of them (cli/helper_table.hpp) and the spawner passes the same entry to
// runtime::run_in_userns / spawn_in_userns, so the name written and the name matched are one
// constant: a helper that is not in a table cannot be started, and adding one is one edit.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace aishell {

struct HelperEntry {
    std::string_view name;  // "__unpack": never a public command's name (cli checks, helper_table.hpp)
    // The body, given the words after NAME. Returns the process's exit status; an Error it
    // throws becomes cli's one `aishell: error:` line and status 1.
    int (*main)(const std::vector<std::string>& args);
};

// The hint of a helper's argument errors: only aishell starts helpers, so a bad argument list
// means someone typed the name by hand.
inline constexpr const char* kHelperHint = "aishell starts it itself; it is not a command";

}  // namespace aishell
