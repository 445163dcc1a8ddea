// What a container run needs, fully resolved by the parent before clone (paths, mount steps,
// the compiled seccomp program, argv/envp), and run_container() which launches it: clone into
// new namespaces, id maps, overlay rootfs, mounts, pivot_root, a tiny PID 1, the command.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"
#include "runtime/fakeroot.hpp"
#include "runtime/idmap.hpp"
#include "runtime/mounts.hpp"

namespace aishell::runtime {

namespace fs = std::filesystem;

enum class Network { Host, None };

struct ProcessSpec {
    std::vector<std::string> argv;      // argv[0] is searched in the container's PATH when bare
    std::vector<std::string> env;       // K=V
    std::vector<std::string> path_dirs; // the container PATH, split (for the search)
    std::string cwd = "/";
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::vector<gid_t> groups;          // supplementary groups (not settable in single mode)
    std::optional<std::string> passwd_line;  // appended to /etc/passwd (keep-id) when set
    std::string create_home;            // keep-id: made (owned by uid/gid) when missing
};

struct ContainerSpec {
    IdMapping mapping;
    // The caller already belongs to a user namespace with `mapping` (it joined the holder,
    // userns_holder.hpp): the container gets no user namespace of its own and no maps written.
    bool in_joined_userns = false;
    fs::path layers_dir;                 // <store>/layers
    std::vector<std::string> layers;     // layer dir names under layers_dir, top first
    fs::path run_dir;                    // <store>/tmp/run-<id>: upper/, work/ (the rootfs is mounted over it)
    std::vector<MountStep> mounts;       // from plan_mounts()
    Network network = Network::Host;
    std::string hostname;
    ProcessSpec process;
    std::uint64_t capabilities = 0;      // bit n = capability n
    std::vector<sock_filter> seccomp;    // empty: unconfined
    bool no_new_privileges = false;
    bool tty = false;                    // -t: a new pty for the command
    bool interactive = false;            // -i: stdin passed through (else /dev/null)
    // overlayfs "volatile": no sync at unmount. Without it the kernel syncs the upper's whole
    // filesystem when the container's mount namespace goes away (every dirty page of every
    // process on that disk), which made the end of a run wait tens of milliseconds on a busy
    // machine. The upper is scratch space (removed, or read into a layer, right after the run),
    // so its crash consistency does not matter; a kept (--keep) upper is the same.
    bool volatile_upper = true;
    // exec: PID 1 reports the command's status through a pipe the moment it exits, and
    // run_container returns then, without waiting for the container's namespaces to be torn
    // down; RunResult::lingering is a pidfd of PID 1 (see exec_image: the run dir is removed
    // once it is gone, after aishell has returned the status). Off for build steps, whose upper
    // dir is read right after the run.
    bool early_status = false;
    // Called once PID 1 runs (its maps written, released), with a pidfd of it (-1 without
    // early_status or pidfd_open): exec forks the run dir's reaper here, while the child sets the container up,
    // rather than at the end where the fork would delay aishell's exit.
    std::function<void(int pid_fd)> on_started;
    // Root emulation (single userns mode, build RUN steps; see fakeroot.hpp): set*id/setgroups
    // and device mknod succeed without effect; chown-family calls are answered by aishell
    // (chown_supervisor.hpp), which leaves the disk alone and appends the owners they asked for
    // to <run_dir>/owners (kOwnerTableName, oci/owner_table.hpp), which a build step's commit
    // turns into the layer's tar owners; and apt is told not to drop to _apt (APT_CONFIG, a file
    // in the container's /dev tmpfs) when the image has apt-get and env has no APT_CONFIG. The
    // filter is stacked under `seccomp` (which still denies what it denies), and is loaded after
    // the runtime's own setresuid so that one really happens.
    bool emulate_root_ids = false;
    // With emulate_root_ids: the ids the command sees itself as (a RUN under a non-root USER in
    // single mode runs as container root, the one mapped id; fakeroot.hpp's emulate_identity).
    std::optional<EmulatedIdentity> emulated_identity;
};

// The owner table a run with emulate_root_ids appends to, in its run dir.
inline constexpr const char* kOwnerTableName = "owners";

struct RunResult {
    int status = 0;      // the exit status aishell should return
    std::string error;   // non-empty when the command could not be run (126/127 with a message)
    int signal = 0;      // the last SIGINT/SIGTERM/SIGHUP/SIGQUIT aishell received and forwarded
    UniqueFd lingering;  // early_status: pidfd of PID 1, still tearing its namespaces down
};

// Launches the container and waits for it. Throws Error when aishell fails before the
// command starts (the caller turns that into status 125).
RunResult run_container(const ContainerSpec& spec);

// Builds the overlayfs option string for mount(2) with paths relative to layers_dir, which the
// child chdirs into (as containers-storage does) to stay under the page-size limit.
// Throws Error when even that does not fit.
std::string overlay_options(const std::vector<std::string>& layers, const std::string& upper,
                            const std::string& work, std::size_t limit, bool volatile_upper = false);

// Exit status for a process wait status: the code, or 128+N when killed by signal N.
int exit_status_from_wait(int wait_status) noexcept;

}  // namespace aishell::runtime
