// What `aishell check` asks of the host: can this user make user namespaces and mount an
// overlay inside one (with `userxattr`, Linux 5.11), does seccomp have user notification (the
// chown emulation of single mode, Linux 5.0), which kernel is this, and what the sysctls that
// block user namespaces say. Each probe is cheap (one short-lived child, a few /proc reads) and
// leaves nothing behind: the overlay probe's directories are removed, its mounts die with the
// child's mount namespace.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace aishell::runtime {

struct NamespaceProbe {
    bool userns = false;   // unshare(CLONE_NEWUSER|CLONE_NEWNS) and the caller's one-id maps worked
    bool overlay = false;  // an overlay with userxattr mounted inside it
    std::string failed_step;  // "unshare", "uid_map", "gid_map", "mount overlay", ... when one failed
    int error = 0;            // its errno
};

// Runs the probe in a child; the overlay's dirs are made under `scratch_parent` (the store's
// tmp/, so the filesystem tested is the store's) and removed afterwards.
NamespaceProbe probe_namespaces(const std::filesystem::path& scratch_parent);

struct HostFacts {
    std::string kernel_release;          // uname -r
    int kernel_major = 0, kernel_minor = 0;
    std::optional<long> apparmor_restrict_userns;  // kernel.apparmor_restrict_unprivileged_userns (Ubuntu 23.10+)
    std::optional<long> max_user_namespaces;       // user.max_user_namespaces
    std::optional<long> unprivileged_userns_clone;  // kernel.unprivileged_userns_clone (Debian's patch, before 5.10)
    bool seccomp_user_notif = false;     // SECCOMP_RET_USER_NOTIF is available
};

HostFacts probe_host_facts();

// Why user namespaces failed (probe.userns false), from the sysctls that turn them off, and
// the exact fix.
struct HostProblem {
    std::string what, fix;
};
HostProblem userns_problem(const NamespaceProbe& probe, const HostFacts& host);

// `NAME` found in $PATH (as podman finds newuidmap with exec.LookPath), else empty.
std::filesystem::path find_in_path(const std::string& name);

}  // namespace aishell::runtime
