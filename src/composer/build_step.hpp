// The part of a build step that runs inside the user namespace, where the ids on disk already
// are container ids and files owned by subordinate ids are readable and removable:
//  - file steps (COPY, ADD, WORKDIR's mkdir): a private mount namespace, the parent's layers
//    mounted as overlay lowerdirs with a fresh upper dir, a child chrooted into that rootfs does
//    the copy (so destination paths and symlinks resolve inside it) and overlayfs records the
//    changes -- copied-up parents keep their metadata, replaced entries get whiteouts;
//  - then, for every step (RUN too), the upper dir becomes a layer blob (oci::write_layer) and
//    is renamed to layers/<diff_id hex>, so the next step has it as a lowerdir without unpacking.
// Before the commit of a RUN, the mountpoints its RUN --mount needed are removed from the upper
// dir (build_mounts.hpp).
//
// One helper per build does this: `aishell __build-step-server FD`, started by StepHelper with
// runtime::spawn_in_userns when the first step needs it (never on a fully cached build), fed
// step specs over a socketpair (FD) and answering each with the layer or one error; it runs
// each step in a forked child (its own mount namespace, cwd and memory) and removes the steps'
// work dirs after answering, off the engine's path. Started once, it saves every step a user
// namespace, a newuidmap + newgidmap pair and a re-exec of aishell (31-36 ms per step here),
// and the work dir removal (which needs the namespace when a RUN left sub-id owned files).
// `aishell __prepare-run-mounts SPEC` (one spec file, one run) remains for RUN --mount's prepare ops.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"
#include "composer/build_step_spec.hpp"
#include "oci/store.hpp"
#include "oci/types.hpp"
#include "runtime/idmap.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::composer {

struct StepLayer {
    oci::Descriptor descriptor;
    oci::Digest diff_id;
};

// The engine's end of the step helper. Not thread-safe; one per build.
class StepHelper {
public:
    StepHelper(const oci::Store& store, const runtime::IdMapping& mapping);
    StepHelper(const StepHelper&) = delete;
    StepHelper& operator=(const StepHelper&) = delete;
    // Closes the channel and waits for the helper, which first removes the dirs it was given.
    ~StepHelper();

    // Starts the helper unless it runs: the caller goes on while it execs (a RUN step starts
    // it before its container, so the two overlap). Throws Error when it cannot be started.
    void start();
    // Runs one step (build_step_spec.hpp) in the helper, starting it when needed: the layer,
    // or nullopt when the step changed nothing. Throws Error with the step's own message and hint.
    std::optional<StepLayer> run(const StepSpec& spec);
    // Removes dir (a step's work dir): queued to the helper when it runs, which removes it after
    // the step it is on; else here (runtime::remove_tree).
    void remove(const std::filesystem::path& dir);

private:
    [[noreturn]] void lost(const std::string& what);
    oci::Store store_;
    runtime::IdMapping mapping_;
    std::optional<runtime::UsernsHelper> helper_;
    UniqueFd channel_;
};

// Body of `aishell __build-step-server FD`: serves StepHelper's requests on FD until it is closed.
int serve_build_steps(int fd);

// Body of `aishell __prepare-run-mounts SPEC_FILE`; returns the exit status (1 with one error line).
int run_build_step_here(const std::string& spec_path);

// Writes a scratch file of `__prepare-run-mounts SPEC` (its error file): no fsync, no rename. It lives
// in a work dir removed right after; a crash leaves only that dir, which nothing reads again
// (durability would cost two fsyncs, 6-11 ms on this disk, per file).
void write_scratch_file(const std::filesystem::path& path, std::string_view data);

// Mounts an overlay of lowers (dir names relative to layers_dir, top first) on target: with
// upper_work (upper, work) read-write, else read-only (then at least two lowers). chdirs into
// layers_dir (the relative lowerdirs keep the options under the page-size limit).
void mount_layers_overlay(const std::filesystem::path& layers_dir, const std::vector<std::string>& lowers,
                          const std::filesystem::path& target,
                          const std::optional<std::pair<std::filesystem::path, std::filesystem::path>>& upper_work);

}  // namespace aishell::composer
