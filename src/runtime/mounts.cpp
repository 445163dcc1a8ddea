// plan_mounts(): the container's mounts after the rootfs, in order, as runc/crun lay them out.
#include "runtime/mounts.hpp"

#include <sys/mount.h>
#include <sys/statvfs.h>

#include <system_error>

#include "common/error.hpp"

namespace aishell::runtime {

namespace {

using Kind = MountStep::Kind;

MountStep fs_step(std::string fstype, std::string target, unsigned long flags, std::string data) {
    MountStep s;
    s.kind = Kind::Fs;
    s.source = fstype;
    s.fstype = std::move(fstype);
    s.target = std::move(target);
    s.flags = flags;
    s.data = std::move(data);
    return s;
}

MountStep bind_step(std::string host, std::string target, bool is_dir, bool ro, unsigned long keep) {
    MountStep s;
    s.kind = Kind::Bind;
    s.source = std::move(host);
    s.target = std::move(target);
    s.target_is_dir = is_dir;
    s.read_only = ro;
    s.flags = keep;
    return s;
}

MountStep symlink_step(std::string link_target, std::string path) {
    MountStep s;
    s.kind = Kind::Symlink;
    s.source = std::move(link_target);
    s.target = std::move(path);
    return s;
}

void add_dev(std::vector<MountStep>& steps, bool gid5_mapped) {
    steps.push_back(fs_step("tmpfs", "/dev", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"));
    // Device nodes cannot be created in a user namespace; bind the host's (as rootless podman).
    for (const char* dev : {"null", "zero", "full", "random", "urandom", "tty"})
        steps.push_back(bind_step(std::string("/dev/") + dev, std::string("/dev/") + dev, false, false, 0));
    // gid=5 (tty) fails with EINVAL when group 5 is not mapped (single mode).
    std::string pts = "newinstance,ptmxmode=0666,mode=0620";
    if (gid5_mapped) pts += ",gid=5";
    steps.push_back(fs_step("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, pts));
    steps.push_back(fs_step("tmpfs", "/dev/shm", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=1777,size=65536k"));
    steps.push_back(fs_step("mqueue", "/dev/mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV, ""));
    steps.push_back(symlink_step("pts/ptmx", "/dev/ptmx"));
    steps.push_back(symlink_step("/proc/self/fd", "/dev/fd"));
    steps.push_back(symlink_step("/proc/self/fd/0", "/dev/stdin"));
    steps.push_back(symlink_step("/proc/self/fd/1", "/dev/stdout"));
    steps.push_back(symlink_step("/proc/self/fd/2", "/dev/stderr"));
}

void add_sys(std::vector<MountStep>& steps, bool host_network) {
    if (!host_network) {
        // A new sysfs needs a network namespace of our own (sysfs is tagged with it).
        steps.push_back(fs_step("sysfs", "/sys", MS_RDONLY | MS_NOSUID | MS_NOEXEC | MS_NODEV, ""));
        return;
    }
    steps.push_back(bind_step("/sys", "/sys", true, true, MS_NOSUID | MS_NOEXEC | MS_NODEV));
}

}  // namespace

const std::vector<std::string>& masked_paths() {
    static const std::vector<std::string> paths{
        "/proc/asound",        "/proc/acpi",           "/proc/kcore",       "/proc/keys",
        "/proc/latency_stats", "/proc/timer_list",     "/proc/timer_stats", "/proc/sched_debug",
        "/proc/scsi",          "/sys/firmware",        "/sys/devices/virtual/powercap"};
    return paths;
}

const std::vector<std::string>& readonly_paths() {
    static const std::vector<std::string> paths{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                                "/proc/sysrq-trigger"};
    return paths;
}

std::vector<MountStep> plan_mounts(const MountPlanInput& in) {
    std::vector<MountStep> steps;
    steps.push_back(fs_step("proc", "/proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, ""));
    add_dev(steps, in.gid5_mapped);
    add_sys(steps, in.host_network);
    if (in.host_network) {
        // Read-only: with real root the container's root is the host's, and these are host files.
        for (const char* f : {"/etc/resolv.conf", "/etc/hosts"})
            steps.push_back(bind_step(f, f, false, true, locked_mount_flags(f)));
    }
    for (const auto& b : in.binds) {
        bool is_dir = std::filesystem::is_directory(b.host);
        steps.push_back(bind_step(b.host.string(), b.container, is_dir, b.read_only, locked_mount_flags(b.host)));
    }
    steps.insert(steps.end(), in.extra.begin(), in.extra.end());
    for (const auto& p : masked_paths()) {
        MountStep s;
        s.kind = Kind::Mask;
        s.target = p;
        steps.push_back(s);
    }
    for (const auto& p : readonly_paths()) {
        MountStep s;
        s.kind = Kind::ReadOnly;
        s.target = p;
        s.self_bind = true;
        s.flags = MS_NOSUID | MS_NOEXEC | MS_NODEV;  // as /proc is mounted
        steps.push_back(s);
    }
    return steps;
}

MountStep make_bind_step(const std::filesystem::path& host, std::string target, bool is_dir, bool read_only) {
    return bind_step(host.string(), std::move(target), is_dir, read_only, read_only ? locked_mount_flags(host) : 0);
}

MountStep make_fs_step(std::string fstype, std::string target, unsigned long flags, std::string data) {
    return fs_step(std::move(fstype), std::move(target), flags, std::move(data));
}

VolumeArg split_volume_arg(const std::string& text) {
    VolumeArg a;
    std::string opt;
    auto first = text.find(':');
    if (first == std::string::npos) throw Error("bad volume '" + text + "'", "use -v HOST:CONTAINER[:ro]");
    a.source = text.substr(0, first);
    auto rest = text.substr(first + 1);
    auto second = rest.find(':');
    a.container = rest.substr(0, second);
    if (second != std::string::npos) opt = rest.substr(second + 1);
    if (opt == "ro") a.read_only = true;
    else if (!opt.empty() && opt != "rw") throw Error("bad volume option '" + opt + "' in '" + text + "'", "use ro or rw");
    if (a.source.empty() || a.container.empty() || a.container.front() != '/')
        throw Error("bad volume '" + text + "'", "use -v HOST:CONTAINER[:ro] with an absolute CONTAINER path");
    return a;
}

bool is_volume_source(const std::string& source) {
    return !source.empty() && source.front() != '/' && source.front() != '.';
}

BindSpec bind_for(const std::filesystem::path& host, const VolumeArg& arg) {
    BindSpec b;
    std::error_code ec;
    b.host = std::filesystem::canonical(std::filesystem::absolute(host), ec);
    if (ec) throw Error("volume source " + host.string() + ": " + ec.message());
    b.container = std::filesystem::path(arg.container).lexically_normal().string();
    if (b.container.size() > 1 && b.container.back() == '/') b.container.pop_back();
    b.read_only = arg.read_only;
    return b;
}

BindSpec parse_bind(const std::string& text) {
    auto arg = split_volume_arg(text);
    return bind_for(arg.source, arg);
}

std::vector<MountStep> masks_under_binds(const std::filesystem::path& hidden, const std::vector<BindSpec>& binds) {
    std::vector<MountStep> out;
    for (const auto& b : binds) {
        auto rel = hidden.lexically_relative(b.host);
        if (rel.empty() || *rel.begin() == "..") continue;
        MountStep s;
        s.kind = Kind::Mask;
        s.target = rel == "." ? b.container : (std::filesystem::path(b.container) / rel).string();
        out.push_back(s);
    }
    return out;
}

unsigned long locked_mount_flags(const std::filesystem::path& host_path) {
    struct statvfs st {};
    if (::statvfs(host_path.c_str(), &st) != 0) return 0;
    unsigned long flags = 0;
    if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    return flags;
}

}  // namespace aishell::runtime
