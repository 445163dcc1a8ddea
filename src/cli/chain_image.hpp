// The project's image through the three-tier chain (composer/chain.hpp), with the CLI's build
// output: what `aishell`, `aishell run` and `aishell exec` run when no --image is given.
#pragma once

#include "cli/command.hpp"
#include "oci/store.hpp"

namespace aishell::cli {

struct ChainRunOptions {
    bool rebuild = false;  // --rebuild: this project's ext again, without the step cache
    bool quiet = false;    // --quiet: no spinner and no "built" line (a failed build still shows its output)
};

// The image to run for the project of the current directory, built first when stale, drawing
// the chain's spinner on stderr (plain lines when stderr is not a terminal).
oci::ImageEntry project_image(oci::Store& store, const ChainRunOptions& options);

}  // namespace aishell::cli
