// The part of a build step that runs inside the user namespace (the hidden `aishell
// __build-step SPEC`, re-executed by runtime::run_in_userns with the store's mapping): there
// the ids on disk already are container ids, and files owned by subordinate ids are readable.
//  - file steps (COPY, ADD, WORKDIR's mkdir): a private mount namespace, the parent's layers
//    mounted as overlay lowerdirs with a fresh upper dir, a child chrooted into that rootfs does
//    the copy (so destination paths and symlinks resolve inside it) and overlayfs records the
//    changes -- copied-up parents keep their metadata, replaced entries get whiteouts;
//  - then, for every step (RUN too), the upper dir becomes a layer blob (oci::write_layer) and
//    is renamed to layers/<diff_id hex>, so the next step has it as a lowerdir without unpacking.
// The spec and the result are small JSON files in the step's run dir.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "oci/types.hpp"

namespace aishell::composer {

struct StepLayer {
    oci::Descriptor descriptor;
    oci::Digest diff_id;
};

// Body of `aishell __build-step SPEC_FILE`; returns the exit status (1 with one error line).
int run_build_step_here(const std::string& spec_path);

// Reads the helper's result file: the layer, or nullopt when the step changed nothing.
std::optional<StepLayer> read_step_result(const std::string& result_path);

}  // namespace aishell::composer
