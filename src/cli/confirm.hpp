// Asking before a command removes data (`volumes prune`, `system reset`), as `docker system
// prune` and `podman system reset` ask: on a terminal the question, answered y or yes; without
// one, nothing is removed unless --yes said so (a script never hangs on a question).
#pragma once

#include <string>

namespace aishell::cli {

// true when the user answered yes on the terminal. Throws Error naming --yes when stdin is not
// a terminal.
bool confirm(const std::string& question, const std::string& hint);

}  // namespace aishell::cli
