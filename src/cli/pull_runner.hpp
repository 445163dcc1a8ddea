// Pulling with the CLI's progress output and Ctrl-C handling, shared by `pull`, `setup` and
// anything else that pulls on a miss.
#pragma once

#include <optional>
#include <string>

#include "cli/command.hpp"
#include "registry/pull.hpp"

namespace aishell::cli {

struct PullSettings {
    std::optional<oci::Platform> platform;
    bool tls_verify = true;
    bool quiet = false;
    std::string mirror;  // empty: $AISHELL_REGISTRY_MIRROR (read by the registry library)
};

// Pulls ref into store, drawing progress on stderr. SIGINT/SIGTERM stop the pull and become
// one "interrupted" error; the store is left as it was.
registry::PullResult pull_with_progress(const CommandContext& ctx, oci::Store& store,
                                        const registry::Reference& ref, const PullSettings& settings);

}  // namespace aishell::cli
