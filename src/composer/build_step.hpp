// The part of a build step that runs inside the user namespace (the hidden `aishell
// __build-step SPEC`, re-executed by runtime::run_in_userns with the store's mapping): there
// the ids on disk already are container ids, and files owned by subordinate ids are readable.
//  - file steps (COPY, ADD, WORKDIR's mkdir): a private mount namespace, the parent's layers
//    mounted as overlay lowerdirs with a fresh upper dir, a child chrooted into that rootfs does
//    the copy (so destination paths and symlinks resolve inside it) and overlayfs records the
//    changes -- copied-up parents keep their metadata, replaced entries get whiteouts;
//  - then, for every step (RUN too), the upper dir becomes a layer blob (oci::write_layer) and
//    is renamed to layers/<diff_id hex>, so the next step has it as a lowerdir without unpacking.
// Before the commit of a RUN, the mountpoints its RUN --mount needed are removed from the upper
// dir (build_mounts.hpp); a spec with "prepare" ops only prepares a RUN's mounts (owners, copies).
// The spec and the result are small JSON files in the step's run dir.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "oci/types.hpp"

namespace aishell::composer {

struct StepLayer {
    oci::Descriptor descriptor;
    oci::Digest diff_id;
};

// Body of `aishell __build-step SPEC_FILE`; returns the exit status (1 with one error line).
int run_build_step_here(const std::string& spec_path);

// Writes a scratch file of the step protocol (spec, result, error): no fsync, no rename. They
// live in the step's work dir, which is removed right after the step; a crash leaves only
// that dir, which nothing reads again (durability would cost two fsyncs, 6-11 ms, per file).
void write_scratch_file(const std::filesystem::path& path, std::string_view data);

// Reads the helper's result file: the layer, or nullopt when the step changed nothing.
std::optional<StepLayer> read_step_result(const std::string& result_path);

// Mounts an overlay of lowers (dir names relative to layers_dir, top first) on target: with
// upper_work (upper, work) read-write, else read-only (then at least two lowers). chdirs into
// layers_dir (the relative lowerdirs keep the options under the page-size limit).
void mount_layers_overlay(const std::filesystem::path& layers_dir, const std::vector<std::string>& lowers,
                          const std::filesystem::path& target,
                          const std::optional<std::pair<std::filesystem::path, std::filesystem::path>>& upper_work);

}  // namespace aishell::composer
