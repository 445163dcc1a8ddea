// The container's mount table as data: plan_mounts() decides, in the parent, every mount the
// child performs after the overlay rootfs (order, flags, options, which paths are masked),
// so the decisions are unit-tested without a kernel; the child only executes the steps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace aishell::runtime {

struct MountStep {
    enum class Kind {
        Fs,        // mount a new filesystem (source, fstype, flags, data) on target
        Bind,      // bind host path source on target (recursive)
        ReadOnly,  // make target read-only (recursively); target is bound onto itself first
        Mask,      // hide target: /dev/null over a file, an empty read-only tmpfs over a dir
        Symlink,   // create target as a symlink to source
    };
    Kind kind = Kind::Fs;
    std::string source;
    std::string target;          // absolute path inside the container
    std::string fstype;
    unsigned long flags = 0;     // MS_* for Fs; for Bind/ReadOnly, the flags kept on remount
    std::string data;
    bool target_is_dir = true;   // the mountpoint to create
    bool read_only = false;      // Bind: make it read-only afterwards
    bool self_bind = false;      // ReadOnly: bind target onto itself first
    friend bool operator==(const MountStep&, const MountStep&) = default;
};

struct BindSpec {
    std::filesystem::path host;  // canonical absolute host path
    std::string container;       // absolute container path
    bool read_only = false;
};

struct MountPlanInput {
    bool host_network = true;
    bool gid5_mapped = false;    // devpts gid=5 only when group 5 exists in the namespace
    std::vector<BindSpec> binds;
    // Mounts the caller planned itself (a build's RUN --mount), after the binds, in order.
    std::vector<MountStep> extra;
};

// Docker's masked and read-only paths (moby oci/defaults.go).
const std::vector<std::string>& masked_paths();
const std::vector<std::string>& readonly_paths();

std::vector<MountStep> plan_mounts(const MountPlanInput& in);

// A bind of host path onto target (a dir or a file mountpoint), read-only when asked, keeping
// the host mount's locked flags on the read-only remount.
MountStep make_bind_step(const std::filesystem::path& host, std::string target, bool is_dir, bool read_only);

// A new filesystem (tmpfs, overlay, ...) on the directory target.
MountStep make_fs_step(std::string fstype, std::string target, unsigned long flags, std::string data);

// -v SOURCE:CONTAINER[:ro|:rw] split, checked for syntax only.
struct VolumeArg {
    std::string source, container;
    bool read_only = false;
};
VolumeArg split_volume_arg(const std::string& text);

// podman's rule (pkg/specgen/volumes.go): a source that does not start with '/' or '.' names a
// volume; "./dir" and "../dir" are paths relative to the current directory.
bool is_volume_source(const std::string& source);

// The bind of host (made absolute and canonical: it must exist) for arg.
BindSpec bind_for(const std::filesystem::path& host, const VolumeArg& arg);

// Parses -v HOST:CONTAINER[:ro|:rw] where HOST is a path.
BindSpec parse_bind(const std::string& text);

// Masks (empty read-only tmpfs) over `hidden` wherever a bind makes it visible inside: the
// store under a bound project dir, which a container must never be able to write (its layer
// trees and seccomp cache are what later runs trust).
std::vector<MountStep> masks_under_binds(const std::filesystem::path& hidden, const std::vector<BindSpec>& binds);

// MS_* flags a remount must keep for a host path (nosuid, nodev, noexec, atime flags): the
// kernel refuses to clear them inside a user namespace (mount_namespaces(7), "locked").
unsigned long locked_mount_flags(const std::filesystem::path& host_path);

}  // namespace aishell::runtime
