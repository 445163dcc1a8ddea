// Host probes for `aishell check` (see host_check.hpp).
#include "runtime/host_check.hpp"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::runtime {

namespace fs = std::filesystem;

namespace {

std::optional<long> read_sysctl(const char* path) {
    try {
        auto text = read_file_if_exists(path, 64);
        if (!text) return std::nullopt;
        long v = 0;
        auto [p, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
        if (ec != std::errc()) return std::nullopt;
        return v;
    } catch (const Error&) {
        return std::nullopt;
    }
}

// What the child reports: the step that failed (an index into kSteps) and its errno.
struct ProbeReport {
    int step = -1;
    int error = 0;
};

constexpr const char* kSteps[] = {"unshare(CLONE_NEWUSER|CLONE_NEWNS)", "write /proc/self/setgroups",
                                  "write /proc/self/uid_map", "write /proc/self/gid_map", "mount overlay with userxattr"};

// Everything the child needs, prepared before fork (it allocates nothing).
struct ProbeInput {
    std::string uid_map, gid_map, options, merged;
};

bool write_proc(const char* path, const std::string& text) noexcept {
    int fd = ::open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    close_keep_errno(fd);
    return ok;
}

// The child: the same steps a run takes to get its root filesystem, in single mode (the one
// mapping any user may write for itself, user_namespaces(7)). C-like after fork.
[[noreturn]] void probe_child(const ProbeInput& in, int report_fd) noexcept {
    auto fail = [&](int step) {
        ProbeReport r{step, errno};
        (void)!::write(report_fd, &r, sizeof r);
        ::_exit(1);
    };
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) fail(0);
    if (!write_proc("/proc/self/setgroups", "deny")) fail(1);
    if (!write_proc("/proc/self/uid_map", in.uid_map)) fail(2);
    if (!write_proc("/proc/self/gid_map", in.gid_map)) fail(3);
    if (::mount("overlay", in.merged.c_str(), "overlay", 0, in.options.c_str()) != 0) fail(4);
    ::_exit(0);
}

}  // namespace

NamespaceProbe probe_namespaces(const fs::path& scratch_parent) {
    NamespaceProbe result;
    const fs::path dir = scratch_parent / (".check-" + random_hex(8));
    make_dirs(dir, 0700);
    struct Cleanup {
        fs::path dir;
        ~Cleanup() { remove_tree_here(dir.string()); }  // overlay's work/work is mode 000: made removable
    } cleanup{dir};
    for (const char* d : {"lower", "upper", "work", "merged"}) make_dirs(dir / d, 0700);
    ProbeInput in{"0 " + std::to_string(::getuid()) + " 1", "0 " + std::to_string(::getgid()) + " 1",
                  "lowerdir=" + (dir / "lower").string() + ",upperdir=" + (dir / "upper").string() +
                      ",workdir=" + (dir / "work").string() + ",userxattr",
                  (dir / "merged").string()};
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
    UniqueFd rd(fds[0]), wr(fds[1]);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork", "namespace probe");
    if (pid == 0) probe_child(in, wr.get());
    wr.reset();
    ProbeReport report;
    ssize_t n;
    do n = ::read(rd.get(), &report, sizeof report); while (n < 0 && errno == EINTR);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (n == static_cast<ssize_t>(sizeof report)) {
        result.failed_step = kSteps[report.step];
        result.error = report.error;
        result.userns = report.step >= 4;
        return result;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        result.failed_step = "namespace probe (status " + std::to_string(status) + ")";
        return result;
    }
    result.userns = result.overlay = true;
    return result;
}

HostFacts probe_host_facts() {
    HostFacts f;
    struct utsname u {};
    if (::uname(&u) == 0) f.kernel_release = u.release;
    const char* p = f.kernel_release.c_str();
    const char* end = p + f.kernel_release.size();
    auto major = std::from_chars(p, end, f.kernel_major);
    if (major.ec == std::errc() && major.ptr < end && *major.ptr == '.') std::from_chars(major.ptr + 1, end, f.kernel_minor);
    f.apparmor_restrict_userns = read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    f.max_user_namespaces = read_sysctl("/proc/sys/user/max_user_namespaces");
    f.unprivileged_userns_clone = read_sysctl("/proc/sys/kernel/unprivileged_userns_clone");
    // seccomp(2): SECCOMP_GET_ACTION_AVAIL (Linux 4.14) answers 0 for an action the kernel has;
    // SECCOMP_RET_USER_NOTIF arrived in 5.0.
    std::uint32_t action = SECCOMP_RET_USER_NOTIF;
    f.seccomp_user_notif = ::syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
    return f;
}

HostProblem userns_problem(const NamespaceProbe& probe, const HostFacts& host) {
    const std::string failed = probe.failed_step + (probe.error ? std::string(": ") + std::strerror(probe.error) : "");
    const std::string persist = " (and the same setting in /etc/sysctl.d/60-aishell.conf to keep it after a reboot)";
    if (host.max_user_namespaces == 0L)
        return {"user namespaces are disabled: user.max_user_namespaces=0 (" + failed + ")",
                "sudo sysctl -w user.max_user_namespaces=15000" + persist};
    if (host.unprivileged_userns_clone == 0L)
        return {"unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone=0 (" + failed + ")",
                "sudo sysctl -w kernel.unprivileged_userns_clone=1" + persist};
    // Ubuntu 23.10+ (the default on 24.04): unshare succeeds, but the namespace gets no
    // capabilities unless an AppArmor profile with `userns,` covers the program.
    if (host.apparmor_restrict_userns == 1L)
        return {"AppArmor restricts unprivileged user namespaces: kernel.apparmor_restrict_unprivileged_userns=1 (" + failed + ")",
                "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" + persist +
                    ", or an AppArmor profile that allows `userns,` for the aishell binary"};
    return {"user namespaces do not work for this user (" + failed + ")",
            "a kernel built with CONFIG_USER_NS; inside a container, one that allows unshare(CLONE_NEWUSER)"};
}

fs::path find_in_path(const std::string& name) {
    // No PATH at all: the default search path of execvp(3) without its current directory.
    const std::string path = get_env("PATH").value_or("/usr/bin:/bin");
    std::size_t start = 0;
    for (;;) {
        const std::size_t colon = path.find(':', start);
        const std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
        if (!dir.empty()) {
            fs::path candidate = fs::path(dir) / name;
            if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        }
        if (colon == std::string::npos) return {};
        start = colon + 1;
    }
}

}  // namespace aishell::runtime
