// The RUN step: its argv and environment (pure: tests/unit/build_run_step_test.cpp), its
// process (user lookup in the image's /etc/passwd and /etc/group, HOME as runc's setupUser
// sets it, single mode's root emulation), and the run itself in the runtime's container with
// its RUN --mount session (build_mounts.hpp). The commit of what it wrote is the step
// helper's (build_step.hpp): run_container_step returns what that needs.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "composer/build_config.hpp"
#include "composer/build_mounts.hpp"
#include "composer/instructions.hpp"
#include "oci/owner_table.hpp"
#include "oci/store.hpp"
#include "runtime/container.hpp"
#include "runtime/idmap.hpp"
#include "runtime/process.hpp"

namespace aishell::composer {

// The command: the exec form as written; the shell form as SHELL + the text, a lone heredoc
// being the script itself and other heredocs appended for the shell to read.
std::vector<std::string> run_argv(const ImageState& s, const RunInstr& r);
// The history text: `RUN /bin/sh -c text` (each word of the shell form) or `RUN ["a", "b"]`.
std::string run_history_text(const std::vector<std::string>& argv, bool exec_form);
// The environment: the config's Env, the ARGs in scope that Env does not set, and the proxy
// build args (predefined_proxy_args) given without an ARG, as BuildKit passes them.
std::vector<std::string> run_environment(const ImageState& s, const std::map<std::string, std::string>& args,
                                         const std::map<std::string, std::string>& build_args);

// What the container runs, and as whom.
struct RunProcess {
    runtime::ProcessSpec process;
    bool emulate_root_ids = false;                           // single mode (runtime/fakeroot.hpp)
    std::optional<runtime::EmulatedIdentity> emulated_identity;
    std::optional<oci::LayerOwner> made_by;                  // the commit's owner of new entries
};
// argv and env as above; cwd the WORKDIR ("" is /); user the config's USER ("" is root),
// resolved in db. PATH is completed as `exec` completes it (runtime::complete_path), HOME set
// from the user's entry when env has none. Single mode (only container root is mapped): runs
// as root that the get*id family reports as USER, and what the step makes is USER's in its
// layer; no supplementary groups (setgroups is denied there).
RunProcess run_process(std::vector<std::string> argv, std::vector<std::string> env, const std::string& cwd,
                       const std::string& user, const runtime::UserDb& db, runtime::UsernsMode mode);

// The default seccomp profile compiled once per build, through the store's cache (libseccomp
// takes 15-35 ms per compilation; a cache hit is one small read): every RUN has the same caps.
class SeccompCache {
public:
    // added: told of a cache entry (and dir) this build created, for the rollback.
    SeccompCache(std::filesystem::path dir, std::function<void(const std::filesystem::path&)> added)
        : dir_(std::move(dir)), added_(std::move(added)) {}
    const std::vector<sock_filter>& program(std::uint64_t caps);

private:
    std::filesystem::path dir_;
    std::function<void(const std::filesystem::path&)> added_;
    std::optional<std::vector<sock_filter>> program_;
    std::uint64_t caps_ = 0;
};

struct RunStepInput {
    const oci::Store* store = nullptr;
    runtime::IdMapping mapping;
    std::vector<std::string> layers;          // the parent's layer dirs, top first
    std::vector<std::string> argv, env;
    std::string cwd, user, network;           // network: "none" or host
    const std::vector<BuildMount>* mounts = nullptr;
    const MountInputs* mount_inputs = nullptr;
    SeccompCache* seccomp = nullptr;
    std::filesystem::path run_dir;            // the step's work dir (build_rollback.hpp)
    bool quiet = false;                       // output shown only when the command fails
    std::string step_label;                   // "[3/7] " for the error lines
};

// What the step helper's commit needs after the run.
struct RunCommit {
    std::vector<std::string> lower;            // the parent's layer dirs
    std::vector<std::string> stubs;            // mountpoints the runtime may have created
    std::optional<oci::LayerOwner> owner;      // new entries' owner (single mode, non-root USER)
};

// "SIGINT", or "signal N" when the C library has no name for it.
std::string signal_name(int sig);

// Runs the command; throws Interrupted when a signal stopped it, Error (its output shown, in a
// quiet build) when it failed.
RunCommit run_container_step(const RunStepInput& in);

}  // namespace aishell::composer
