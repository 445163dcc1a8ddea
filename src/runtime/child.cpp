// The container's PID 1 and its command, between clone and exec. See child.hpp for the rules:
// no allocation, no exceptions, only system calls; failures go to the report pipe.
#include "runtime/child.hpp"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <signal.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/magic.h>
#include <linux/seccomp.h>

#include <algorithm>
#include <cstring>
#include <iterator>

#include "common/resolve_path.hpp"
#include "common/unique_fd.hpp"
#include "runtime/fakeroot.hpp"
#include "runtime/raw_ids.hpp"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)  // Linux 4.13, include/uapi/asm-generic/ioctls.h
#endif

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace aishell::runtime {

const char* step_name(ChildStep step) noexcept {
    switch (step) {
        case ChildStep::Sync: return "wait for the id maps";
        case ChildStep::SetIds: return "become root in the user namespace";
        case ChildStep::Hostname: return "sethostname";
        case ChildStep::MakePrivate: return "make mounts private";
        case ChildStep::Overlay: return "mount overlay rootfs";
        case ChildStep::OpenRoot: return "open rootfs";
        case ChildStep::Mount: return "mount";
        case ChildStep::Loopback: return "bring up lo";
        case ChildStep::Pivot: return "pivot_root";
        case ChildStep::Passwd: return "add passwd entry";
        case ChildStep::Home: return "create the home directory";
        case ChildStep::Chdir: return "chdir to the working directory";
        case ChildStep::Fork: return "fork the command";
        case ChildStep::Terminal: return "set up the terminal";
        case ChildStep::Stdio: return "set up stdio";
        case ChildStep::CapBounding: return "drop bounding capabilities";
        case ChildStep::NoNewPrivs: return "set no_new_privs";
        case ChildStep::Seccomp: return "load the seccomp filter";
        case ChildStep::Groups: return "setgroups";
        case ChildStep::SetGid: return "setgid";
        case ChildStep::SetUid: return "setuid";
        case ChildStep::Capabilities: return "set capabilities";
        case ChildStep::Exec: return "exec";
        case ChildStep::AptConfig: return "write the apt configuration";
        case ChildStep::FakeRoot: return "load the root emulation filter";
        case ChildStep::CommandLine: return "replace the host command line of PID 1";
    }
    return "?";
}

namespace {

// ---- reporting -------------------------------------------------------------------------------

void copy_str(char* dst, std::size_t cap, const char* src) noexcept {
    std::size_t i = 0;
    for (; src && src[i] && i + 1 < cap; ++i) dst[i] = src[i];
    dst[i] = '\0';
}

[[noreturn]] void fail(const ChildContext& ctx, ChildStep step, const char* path, int status = 125) noexcept {
    ChildReport r;
    r.step = static_cast<std::int32_t>(step);
    r.err = errno;
    copy_str(r.path, sizeof r.path, path);
    (void)!::write(ctx.report_fd, &r, sizeof r);
    ::_exit(status);
}

// prefix followed by the decimal n, into buf ("/proc/self/fd/N", "/dev/pts/N").
const char* numbered_path(char (&buf)[32], const char* prefix, unsigned n) noexcept {
    char digits[12];
    int k = 0;
    do { digits[k++] = static_cast<char>('0' + n % 10); n /= 10; } while (n && k < 11);
    std::size_t i = 0;
    for (; prefix[i] && i + 12 < sizeof buf; ++i) buf[i] = prefix[i];
    while (k) buf[i++] = digits[--k];
    buf[i] = '\0';
    return buf;
}

const char* fd_path(char (&buf)[32], int fd) noexcept {
    return numbered_path(buf, "/proc/self/fd/", static_cast<unsigned>(fd));
}

// fd to sock as the one descriptor of a one-byte message (SCM_RIGHTS); false with errno.
bool send_fd(int sock, int fd) noexcept {
    FdMessage m;
    cmsghdr* cm = CMSG_FIRSTHDR(&m.msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    return ::sendmsg(sock, &m.msg, MSG_NOSIGNAL) == 1;
}

// ---- paths beneath the rootfs ----------------------------------------------------------------

// Opens path (absolute inside the container) beneath rootfd, resolving symlinks as if rootfd
// were "/" (common/resolve_path.hpp: openat2 RESOLVE_IN_ROOT, else its userspace walk). The
// resolver allocates nothing and throws nothing, so it is safe here between clone and exec.
int open_in_root(int rootfd, const char* path, int flags) noexcept {
    return open_resolved(rootfd, path, flags, Resolve::InRoot);
}

// mkdir -p beneath rootfd; the last component becomes a dir or an empty file.
bool make_mountpoint(int rootfd, const char* path, bool is_dir) noexcept {
    char buf[4096];
    std::size_t len = std::strlen(path);
    if (len >= sizeof buf) { errno = ENAMETOOLONG; return false; }
    std::memcpy(buf, path, len + 1);
    for (std::size_t i = 1; i <= len; ++i) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        bool last = buf[i] == '\0';
        char saved = buf[i];
        buf[i] = '\0';
        int fd = open_in_root(rootfd, buf, O_PATH);
        if (fd >= 0) {
            ::close(fd);
        } else if (errno == ENOENT) {
            // Create the component in its (resolved) parent.
            char* slash = std::strrchr(buf, '/');
            *slash = '\0';
            int parent = open_in_root(rootfd, buf[0] ? buf : "/", O_PATH | O_DIRECTORY);
            *slash = '/';
            if (parent < 0) return false;
            int rc;
            if (!last || is_dir) {
                rc = ::mkdirat(parent, slash + 1, 0755);
            } else {
                rc = ::openat(parent, slash + 1, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (rc >= 0) ::close(rc);
            }
            int e = errno;
            ::close(parent);
            if (rc < 0 && e != EEXIST) { errno = e; return false; }
        } else {
            return false;
        }
        buf[i] = saved;
    }
    return true;
}

// ---- mounts ----------------------------------------------------------------------------------

// Read-only, recursively: mount_setattr(2) (Linux 5.12); else one MS_REMOUNT keeping the locked
// flags the parent found (a remount that would clear them fails with EPERM in a userns).
bool make_read_only(int fd, unsigned long keep) noexcept {
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) == 0) return true;
    if (errno != ENOSYS) return false;
    char p[32];
    return ::mount(nullptr, fd_path(p, fd), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, nullptr) == 0;
}

// Makes the mount at target read-only, through a fresh fd: one opened before a bind still
// names the mount below it.
bool remount_read_only(int rootfd, const char* target, unsigned long keep) noexcept {
    const int fd = open_in_root(rootfd, target, O_PATH);
    if (fd < 0) return false;
    const bool ok = make_read_only(fd, keep);
    close_keep_errno(fd);
    return ok;
}

// /dev/fd, /dev/stdin and friends: a symlink in the container's /dev named as target ends.
bool link_in_dev(int rootfd, const MountStep& s) noexcept {
    const int dev = open_in_root(rootfd, "/dev", O_PATH | O_DIRECTORY);
    if (dev < 0) return false;
    const char* name = std::strrchr(s.target.c_str(), '/') + 1;
    const int rc = ::symlinkat(s.source.c_str(), dev, name);
    close_keep_errno(dev);
    return rc == 0 || errno == EEXIST;
}

// Hides a sensitive /proc or /sys path as runc's maskedPaths do: an empty read-only tmpfs over
// a directory, /dev/null over anything else. A path this kernel lacks needs no hiding.
bool mask_path(int rootfd, const char* target) noexcept {
    char p[32];
    const int fd = open_in_root(rootfd, target, O_PATH);
    if (fd < 0) return errno == ENOENT;
    struct stat st {};
    bool ok = ::fstat(fd, &st) == 0;
    if (ok && S_ISDIR(st.st_mode))
        ok = ::mount("tmpfs", fd_path(p, fd), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0") == 0;
    else if (ok)
        ok = ::mount("/dev/null", fd_path(p, fd), nullptr, MS_BIND, nullptr) == 0;
    close_keep_errno(fd);
    return ok;
}

// A path of the rootfs made read-only (/proc/sys, /proc/sysrq-trigger, ...): bound onto
// itself, then that bind remounted read-only. A path this kernel lacks is left out.
bool bind_read_only(int rootfd, const char* target, unsigned long keep) noexcept {
    char p[32], q[32];
    const int fd = open_in_root(rootfd, target, O_PATH);
    if (fd < 0) return errno == ENOENT;
    const bool ok = ::mount(fd_path(p, fd), fd_path(q, fd), nullptr, MS_BIND | MS_REC, nullptr) == 0;
    close_keep_errno(fd);
    return ok && remount_read_only(rootfd, target, keep);
}

// A filesystem (proc, tmpfs, devpts, ...) or a bind of a host path at target, whose mount
// point is made first; a read-only bind is remounted so.
bool mount_at(int rootfd, const MountStep& s) noexcept {
    char p[32];
    const char* target = s.target.c_str();
    if (!make_mountpoint(rootfd, target, s.target_is_dir)) return false;
    const int fd = open_in_root(rootfd, target, O_PATH);
    if (fd < 0) return false;
    const bool bind = s.kind == MountStep::Kind::Bind;
    const bool ok = bind ? ::mount(s.source.c_str(), fd_path(p, fd), nullptr, MS_BIND | MS_REC, nullptr) == 0
                         : ::mount(s.source.c_str(), fd_path(p, fd), s.fstype.c_str(), s.flags,
                                   s.data.empty() ? nullptr : s.data.c_str()) == 0;
    close_keep_errno(fd);
    if (!ok) return false;
    return !(bind && s.read_only) || remount_read_only(rootfd, target, s.flags);
}

bool mount_step(int rootfd, const MountStep& s) noexcept {
    switch (s.kind) {
        case MountStep::Kind::Symlink: return link_in_dev(rootfd, s);
        case MountStep::Kind::Mask: return mask_path(rootfd, s.target.c_str());
        case MountStep::Kind::ReadOnly: return bind_read_only(rootfd, s.target.c_str(), s.flags);
        case MountStep::Kind::Fs:
        case MountStep::Kind::Bind: return mount_at(rootfd, s);
    }
    return false;
}

// The overlay rootfs: fsopen + fsconfig "lowerdir+" (Linux 6.8: one layer per call, no option
// length limit). Returns false with errno ENOSYS/EINVAL when that API or key is missing, so
// the caller falls back to mount(2).
bool mount_overlay_new_api(const ChildContext& ctx) noexcept {
    int fsfd = static_cast<int>(::syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC));
    if (fsfd < 0) return false;
    auto set = [&](unsigned cmd, const char* key, const char* value) {
        return ::syscall(SYS_fsconfig, fsfd, cmd, key, value, 0) == 0;
    };
    bool ok = true;
    for (const auto& l : ctx.lower_abs)
        if (ok) ok = set(FSCONFIG_SET_STRING, "lowerdir+", l.c_str());
    if (ok) ok = set(FSCONFIG_SET_STRING, "upperdir", ctx.upper_abs.c_str());
    if (ok) ok = set(FSCONFIG_SET_STRING, "workdir", ctx.work_abs.c_str());
    if (ok) ok = set(FSCONFIG_SET_FLAG, "userxattr", nullptr);
    if (ok && ctx.spec->volatile_upper) ok = set(FSCONFIG_SET_FLAG, "volatile", nullptr);
    if (ok) ok = set(FSCONFIG_CMD_CREATE, nullptr, nullptr);
    int mfd = ok ? static_cast<int>(::syscall(SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, 0)) : -1;
    close_keep_errno(fsfd);
    if (mfd < 0) return false;
    ok = ::syscall(SYS_move_mount, mfd, "", AT_FDCWD, ctx.rootfs.c_str(), MOVE_MOUNT_F_EMPTY_PATH) == 0;
    close_keep_errno(mfd);
    if (!ok && (errno == ENOSYS || errno == EINVAL)) errno = EIO;  // not a reason to fall back
    return ok;
}

void mount_overlay(const ChildContext& ctx) noexcept {
    if (mount_overlay_new_api(ctx)) return;
    if (errno != ENOSYS && errno != EINVAL) fail(ctx, ChildStep::Overlay, ctx.rootfs.c_str());
    // mount(2) takes one page of options: relative lowerdirs from inside layers/.
    if (::chdir(ctx.layers_dir.c_str()) != 0) fail(ctx, ChildStep::Overlay, ctx.layers_dir.c_str());
    if (::mount("overlay", ctx.rootfs.c_str(), "overlay", 0, ctx.overlay_data.c_str()) != 0)
        fail(ctx, ChildStep::Overlay, ctx.rootfs.c_str());
}

void loopback_up(const ChildContext& ctx) noexcept {
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) fail(ctx, ChildStep::Loopback, "lo");
    ifreq ifr{};
    copy_str(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) fail(ctx, ChildStep::Loopback, "lo");
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) fail(ctx, ChildStep::Loopback, "lo");
    ::close(s);
}

// pivot_root(".", ".") then detach the old root stacked on top (as runc): no directory for the
// old root is needed in the image, and nothing of the host stays reachable.
void pivot(const ChildContext& ctx, int rootfd) noexcept {
    if (::fchdir(rootfd) != 0) fail(ctx, ChildStep::Pivot, ctx.rootfs.c_str());
    if (::syscall(SYS_pivot_root, ".", ".") != 0) fail(ctx, ChildStep::Pivot, ctx.rootfs.c_str());
    if (::umount2(".", MNT_DETACH) != 0) fail(ctx, ChildStep::Pivot, "old root");
    if (::chdir("/") != 0) fail(ctx, ChildStep::Pivot, "/");
}

void setup_filesystem(const ChildContext& ctx) noexcept {
    const ContainerSpec& spec = *ctx.spec;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail(ctx, ChildStep::MakePrivate, "/");
    // The upper dir is the container's "/": owned by container root, as in the image (under
    // keep-id the caller who made it is not root).
    if (ctx.root_mapped && ::chown(ctx.upper_abs.c_str(), 0, 0) != 0) fail(ctx, ChildStep::Overlay, ctx.upper_abs.c_str());
    mount_overlay(ctx);
    int rootfd = ::open(ctx.rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) fail(ctx, ChildStep::OpenRoot, ctx.rootfs.c_str());
    for (const auto& step : spec.mounts)
        if (!mount_step(rootfd, step)) fail(ctx, ChildStep::Mount, step.target.c_str());
    pivot(ctx, rootfd);
    ::close(rootfd);
}

void append_passwd(const ChildContext& ctx) noexcept {
    const auto& line = *ctx.spec->process.passwd_line;
    int fd = ::open("/etc/passwd", O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) fail(ctx, ChildStep::Passwd, "/etc/passwd");
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) fail(ctx, ChildStep::Passwd, "/etc/passwd");
    ::close(fd);
}

// mkdir -p inside the container (after pivot_root); false with errno on failure.
bool make_path(const char* path, char (&failed)[4096]) noexcept {
    std::size_t len = std::strlen(path);
    if (len >= sizeof failed) { errno = ENAMETOOLONG; copy_str(failed, sizeof failed, path); return false; }
    std::memcpy(failed, path, len + 1);
    for (std::size_t i = 1; i <= len; ++i) {
        if (failed[i] != '/' && failed[i] != '\0') continue;
        char c = failed[i];
        failed[i] = '\0';
        if (::mkdir(failed, 0755) != 0 && errno != EEXIST) return false;
        failed[i] = c;
    }
    return true;
}

// Docker creates a missing WorkingDir.
void enter_workdir(const ChildContext& ctx) noexcept {
    const char* cwd = ctx.spec->process.cwd.c_str();
    if (::chdir(cwd) == 0) return;
    if (errno != ENOENT) fail(ctx, ChildStep::Chdir, cwd);
    char buf[4096];
    if (!make_path(cwd, buf)) fail(ctx, ChildStep::Chdir, buf);
    if (::chdir(cwd) != 0) fail(ctx, ChildStep::Chdir, cwd);
}

// keep-id: the caller's HOME, owned by the caller, when the image lacks it.
void create_home(const ChildContext& ctx) noexcept {
    const ProcessSpec& p = ctx.spec->process;
    const char* home = p.create_home.c_str();
    struct stat st {};
    if (::lstat(home, &st) == 0 || errno != ENOENT) return;  // there already (or not ours to fix)
    char buf[4096];
    if (!make_path(home, buf)) fail(ctx, ChildStep::Home, buf);
    if (::chown(home, p.uid, p.gid) != 0) fail(ctx, ChildStep::Home, home);
}

// Root emulation: APT_CONFIG for apt (fakeroot.hpp), when the image has apt-get. The file goes
// into the container's /dev, which must be our tmpfs so that it never reaches the upper dir (a
// layer). Returns whether the command gets APT_CONFIG.
bool write_apt_config(const ChildContext& ctx) noexcept {
    struct stat st {};
    if (ctx.envp_apt.empty() || ::stat(kAptBinary, &st) != 0 || !S_ISREG(st.st_mode)) return false;
    struct statfs fs {};
    if (::statfs("/dev", &fs) != 0) fail(ctx, ChildStep::AptConfig, "/dev");
    if (fs.f_type != TMPFS_MAGIC) { errno = EXDEV; fail(ctx, ChildStep::AptConfig, "/dev (not a tmpfs)"); }
    int fd = ::open(kAptConfigPath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
    if (fd < 0) fail(ctx, ChildStep::AptConfig, kAptConfigPath);
    auto n = ::write(fd, kAptConfigText.data(), kAptConfigText.size());
    if (n != static_cast<ssize_t>(kAptConfigText.size())) fail(ctx, ChildStep::AptConfig, kAptConfigPath);
    ::close(fd);
    return true;
}

// ---- the command -----------------------------------------------------------------------------

void reset_signals() noexcept {
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig)
        if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &sa, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// The peer of master: TIOCGPTPEER (Linux 4.13) opens it through the master, not by a path
// someone could have replaced; before 4.13 (EINVAL/ENOTTY), by the number TIOCGPTN gives.
// ptsname(3)/grantpt(3) are not async-signal-safe and grantpt has nothing to do on a devpts
// that gives the opener the pty.
int open_peer(const ChildContext& ctx, int master) noexcept {
    constexpr int flags = O_RDWR | O_NOCTTY | O_CLOEXEC;
    int slave = ::ioctl(master, TIOCGPTPEER, flags);
    if (slave >= 0) return slave;
    if (errno != EINVAL && errno != ENOTTY) fail(ctx, ChildStep::Terminal, "TIOCGPTPEER");
    unsigned n = 0;
    if (::ioctl(master, TIOCGPTN, &n) != 0) fail(ctx, ChildStep::Terminal, "TIOCGPTN");
    char path[32];
    slave = ::open(numbered_path(path, "/dev/pts/", n), flags);
    if (slave < 0) fail(ctx, ChildStep::Terminal, path);
    return slave;
}

// -t: a pty from the container's own devpts (/dev/ptmx -> pts/ptmx, mounts.cpp), opened after
// pivot_root so that the command's terminal is a /dev/pts/N that exists inside (ttyname(3)), as
// crun and runc do. The master goes to aishell over console_sock (runc's console socket) and is
// closed here: nothing inside holds it. Returns the slave, with the user's terminal's modes and
// size, owned by the command's user (runc's fixStdioPermissions).
int open_terminal(const ChildContext& ctx) noexcept {
    int master = ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) fail(ctx, ChildStep::Terminal, "/dev/ptmx");
    int unlock = 0;
    if (::ioctl(master, TIOCSPTLCK, &unlock) != 0) fail(ctx, ChildStep::Terminal, "TIOCSPTLCK");
    int slave = open_peer(ctx, master);
    const TerminalSettings& t = ctx.terminal;
    if (t.has_modes && ::tcsetattr(slave, TCSANOW, &t.modes) != 0) fail(ctx, ChildStep::Terminal, "tcsetattr");
    if (t.has_size && ::ioctl(master, TIOCSWINSZ, &t.size) != 0) fail(ctx, ChildStep::Terminal, "TIOCSWINSZ");
    // EPERM/EINVAL: the id is not ours to give (single mode); the pty stays container root's.
    if (::fchown(slave, ctx.spec->process.uid, static_cast<gid_t>(-1)) != 0 && errno != EPERM && errno != EINVAL)
        fail(ctx, ChildStep::Terminal, "chown pty");
    if (!send_fd(ctx.console_sock, master)) fail(ctx, ChildStep::Terminal, "send the pty master");
    ::close(master);
    ::close(ctx.console_sock);
    return slave;
}

// slave: the pty from open_terminal, or -1 without -t.
void setup_stdio(const ChildContext& ctx, int slave) noexcept {
    if (::setsid() < 0) fail(ctx, ChildStep::Terminal, "setsid");
    if (slave >= 0) {
        if (::ioctl(slave, TIOCSCTTY, 0) != 0) fail(ctx, ChildStep::Terminal, "pty");
        for (int fd = 0; fd < 3; ++fd)
            if (::dup2(slave, fd) < 0) fail(ctx, ChildStep::Stdio, "pty");
        if (slave > 2) ::close(slave);
        if (ctx.stdin_null >= 0 && ::dup2(ctx.stdin_null, 0) < 0) fail(ctx, ChildStep::Stdio, "/dev/null");
    } else if (ctx.stdin_null >= 0) {
        if (::dup2(ctx.stdin_null, 0) < 0) fail(ctx, ChildStep::Stdio, "/dev/null");
    }
}

void load_filter(const ChildContext& ctx, const sock_fprog& prog, ChildStep step) noexcept {
    if (prog.len > 0 && ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) fail(ctx, step, nullptr);
}

// The root emulation filter whose chown calls go to aishell's ChownSupervisor: loaded with a
// listener, whose fd travels to the parent over owner_sock (SCM_RIGHTS) and is closed here.
void load_notifying_filter(const ChildContext& ctx) noexcept {
    int listener = static_cast<int>(
        ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &ctx.fakeroot));
    if (listener < 0) fail(ctx, ChildStep::FakeRoot, nullptr);
    if (!send_fd(ctx.owner_sock, listener)) fail(ctx, ChildStep::FakeRoot, "send the listener");
    ::close(listener);
    ::close(ctx.owner_sock);
}

// After setresuid to a non-root uid the effective set is empty (KEEPCAPS keeps only the
// permitted one): raise it again so that seccomp(2) may still be called without no_new_privs.
void raise_effective(const ChildContext& ctx) noexcept {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &hdr, data) != 0) fail(ctx, ChildStep::FakeRoot, "capget");
    for (auto& d : data) d.effective = d.permitted;
    if (::syscall(SYS_capset, &hdr, data) != 0) fail(ctx, ChildStep::FakeRoot, "capset");
}

// Capabilities and seccomp, in the order that works without no_new_privs: the filter is loaded
// while CAP_SYS_ADMIN is still held in the namespace (seccomp(2)), then ids and caps drop.
// With root emulation, both filters are loaded after setgroups/setresgid/setresuid (the
// emulation would turn those into no-ops) and before capset (which it leaves alone), the
// emulation filter first so that the profile's denials win (fakeroot.hpp, "Stacking").
void drop_privileges(const ChildContext& ctx) noexcept {
    const ContainerSpec& spec = *ctx.spec;
    const bool emulate = ctx.fakeroot.len > 0;
    for (unsigned cap = 0; cap <= ctx.last_cap; ++cap) {
        if (spec.capabilities & (1ull << cap)) continue;
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) fail(ctx, ChildStep::CapBounding, nullptr);
    }
    if (spec.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(ctx, ChildStep::NoNewPrivs, nullptr);
    if (!emulate) load_filter(ctx, ctx.seccomp, ChildStep::Seccomp);
    const ProcessSpec& p = spec.process;
    if (ctx.setgroups_allowed && raw_setgroups(p.groups.size(), p.groups.data()) != 0) fail(ctx, ChildStep::Groups, nullptr);
    if (raw_setresgid(p.gid, p.gid, p.gid) != 0) fail(ctx, ChildStep::SetGid, nullptr);
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail(ctx, ChildStep::SetUid, "keepcaps");
    if (raw_setresuid(p.uid, p.uid, p.uid) != 0) fail(ctx, ChildStep::SetUid, nullptr);
    if (emulate) {
        if (p.uid != 0 && !spec.no_new_privileges) raise_effective(ctx);
        if (ctx.owner_sock >= 0) load_notifying_filter(ctx);
        else load_filter(ctx, ctx.fakeroot, ChildStep::FakeRoot);
        load_filter(ctx, ctx.seccomp, ChildStep::Seccomp);
    }
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2];
    std::memcpy(data, ctx.caps, sizeof data);
    if (::syscall(SYS_capset, &hdr, data) != 0) fail(ctx, ChildStep::Capabilities, nullptr);
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        fail(ctx, ChildStep::Capabilities, "ambient");
}

// execve with the container's PATH (execvpe would search aishell's own PATH).
[[noreturn]] void exec_command(const ChildContext& ctx, bool apt_config) noexcept {
    const char* file = ctx.argv[0];
    char* const* argv = const_cast<char* const*>(ctx.argv.data());
    char* const* envp = const_cast<char* const*>(apt_config ? ctx.envp_apt.data() : ctx.envp.data());
    if (std::strchr(file, '/')) {
        ::execve(file, argv, envp);
        fail(ctx, ChildStep::Exec, file, errno == ENOENT ? 127 : 126);
    }
    int first_error = ENOENT;
    char buf[4096];
    for (const auto& dir : ctx.spec->process.path_dirs) {
        std::size_t dl = dir.size(), fl = std::strlen(file);
        if (dl + fl + 2 > sizeof buf) continue;
        std::memcpy(buf, dir.data(), dl);
        buf[dl] = '/';
        std::memcpy(buf + dl + 1, file, fl + 1);
        ::execve(buf, argv, envp);
        if (errno != ENOENT && errno != ENOTDIR && first_error == ENOENT) first_error = errno;
    }
    errno = first_error;
    fail(ctx, ChildStep::Exec, file, first_error == ENOENT ? 127 : 126);
}

[[noreturn]] void command_main(const ChildContext& ctx, bool apt_config) noexcept {
    reset_signals();
    setup_stdio(ctx, ctx.console_sock >= 0 ? open_terminal(ctx) : -1);
    drop_privileges(ctx);
    // Nothing of aishell's may reach the command: every fd but 0-2 closes on exec.
    if (::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) != 0)
        for (int fd = 3; fd < 4096; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    exec_command(ctx, apt_config);
}

// The command's process, started as posix_spawn starts one: clone(CLONE_VM | CLONE_VFORK) on a
// stack of its own, PID 1 suspended until the exec (or the failure report and _exit). Nothing
// of PID 1's address space (a copy of aishell's) is duplicated for a process about to exec,
// which a plain fork did page table by page table: a tenth of a millisecond per start. The
// child writes nothing PID 1 reads: its own stack, the report pipe; errno is PID 1's TLS, which
// PID 1 does not read across the call. Its signal dispositions are its own copy (no
// CLONE_SIGHAND), so command_main's reset does not touch PID 1's.
struct CommandStart {
    const ChildContext* ctx;
    bool apt_config;
};

int command_entry(void* arg) noexcept {
    const auto* start = static_cast<const CommandStart*>(arg);
    command_main(*start->ctx, start->apt_config);
}

pid_t spawn_command(const ChildContext& ctx, bool apt_config) noexcept {
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer cannot follow a switch to a stack it did not allocate (it warns that
    // false reports may follow, google/sanitizers#189): sanitizer builds fork as before.
    pid_t forked = static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, nullptr));
    if (forked < 0) fail(ctx, ChildStep::Fork, nullptr);
    if (forked == 0) command_main(ctx, apt_config);
    return forked;
#endif
    constexpr std::size_t kStack = 256 * 1024;
    void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) fail(ctx, ChildStep::Fork, "stack");
    CommandStart start{&ctx, apt_config};
    pid_t pid = ::clone(command_entry, static_cast<char*>(stack) + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
    if (pid < 0) fail(ctx, ChildStep::Fork, nullptr);
    ::munmap(stack, kStack);  // the child has exec'd or exited: its stack is free
    return pid;
}

// ---- PID 1's command line ----------------------------------------------------------------------

// The fields of /proc/self/stat PID 1 needs (proc(5), numbered from 1), in prctl_mm_map order.
constexpr int kStatFields[] = {26, 27, 45, 46, 47, 28, 48, 49, 50, 51};  // code, data, brk, stack, arg, env

// Parses the numbers `kStatFields` names out of /proc/self/stat into out (in that order).
// The name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
bool read_memory_layout(std::uint64_t (&out)[std::size(kStatFields)]) noexcept {
    char buf[2048];
    int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return false;
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')');
    if (!p) return false;
    ++p;
    std::uint64_t fields[64] = {};
    int field = 2;  // p is just past field 2
    while (*p && field < 63) {
        while (*p == ' ') ++p;
        if (!*p || *p == '\n') break;
        ++field;
        std::uint64_t v = 0;
        for (; *p >= '0' && *p <= '9'; ++p) v = v * 10 + static_cast<std::uint64_t>(*p - '0');
        while (*p && *p != ' ') ++p;  // the state letter, negative numbers: not needed
        fields[field] = v;
    }
    for (std::size_t i = 0; i < std::size(kStatFields); ++i) {
        if (kStatFields[i] > field) return false;  // a kernel without the field (< 3.5)
        out[i] = fields[kStatFields[i]];
    }
    return true;
}

// PID 1 is a fork of aishell, so /proc/1/cmdline, which anyone in the container may read (unlike
// environ and mem, which PID 1's non-dumpable flag guards), would show aishell's own command
// line: -e and --build-arg values, host paths. PID 1 overwrites its argument area in place with a
// fixed name (its own memory: no privilege needed), then PR_SET_MM_MAP (unprivileged, Linux 3.18
// with CONFIG_CHECKPOINT_RESTORE, as Debian builds it) shrinks the area to the name and empties
// the environment's, so the kernel reports exactly "aishell-init" and no environment. Where that
// call is refused the name is followed by NULs, which hide as much. Nothing in PID 1 reads its
// argv or environment afterwards: the command's argv and envp were copied out by the parent.
void hide_host_command_line(const ChildContext& ctx) noexcept {
    static constexpr char kName[] = "aishell-init";
    std::uint64_t m[std::size(kStatFields)];
    if (!read_memory_layout(m)) fail(ctx, ChildStep::CommandLine, "/proc/self/stat");
    enum { kStartCode, kEndCode, kStartData, kEndData, kStartBrk, kStartStack, kArgStart, kArgEnd, kEnvStart, kEnvEnd };
    if (m[kArgStart] == 0 || m[kArgEnd] <= m[kArgStart]) fail(ctx, ChildStep::CommandLine, "/proc/self/stat");
    char* area = reinterpret_cast<char*>(m[kArgStart]);
    const std::size_t size = m[kArgEnd] - m[kArgStart];
    std::memset(area, 0, size);
    std::memcpy(area, kName, std::min(size - 1, sizeof kName - 1));
    // The host environment too: nothing in PID 1 reads it (the command's envp is ctx.envp), and
    // then it is gone from PID 1's memory whatever the prctl below does.
    if (m[kEnvStart] != 0 && m[kEnvEnd] > m[kEnvStart])
        std::memset(reinterpret_cast<char*>(m[kEnvStart]), 0, m[kEnvEnd] - m[kEnvStart]);

    prctl_mm_map map{};
    map.start_code = m[kStartCode];
    map.end_code = m[kEndCode];
    map.start_data = m[kStartData];
    map.end_data = m[kEndData];
    map.start_brk = m[kStartBrk];
    map.brk = static_cast<std::uint64_t>(::syscall(SYS_brk, 0));
    map.start_stack = m[kStartStack];
    map.arg_start = m[kArgStart];
    map.arg_end = m[kArgStart] + std::min(size, sizeof kName);
    map.env_start = map.env_end = m[kEnvEnd];
    map.exe_fd = static_cast<std::uint32_t>(-1);  // unchanged (changing it would need CAP_SYS_ADMIN)
    (void)::prctl(PR_SET_MM, PR_SET_MM_MAP, &map, sizeof map, 0);
}

// ---- PID 1 -----------------------------------------------------------------------------------

// Reaps every child; forwards the signals aishell forwards to it; exits with the command's
// status (128+N when it was killed by N: PID 1 cannot die of a signal sent from inside).
[[noreturn]] void init_loop(pid_t command, int status_fd) noexcept {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH}) sigaddset(&set, sig);
    for (;;) {
        siginfo_t info{};
        int sig = ::sigwaitinfo(&set, &info);
        if (sig < 0) continue;
        if (sig != SIGCHLD) {
            ::kill(command, sig);
            continue;
        }
        int status = 0;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
            if (pid != command) continue;
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            // Before _exit: the namespaces' teardown (unmounting everything) comes after.
            if (status_fd >= 0) (void)!::write(status_fd, &code, sizeof code);
            ::_exit(code);
        }
    }
}

}  // namespace

void child_main(const ChildContext& ctx) noexcept {
    const ContainerSpec& spec = *ctx.spec;
    char go = 0;
    ssize_t n;
    do n = ::read(ctx.sync_fd, &go, 1); while (n < 0 && errno == EINTR);
    if (n != 1) ::_exit(125);  // the parent failed and reports it itself
    ::close(ctx.sync_fd);
    hide_host_command_line(ctx);
    if (ctx.root_mapped) {
        if (raw_setresgid(0, 0, 0) != 0 || raw_setresuid(0, 0, 0) != 0) fail(ctx, ChildStep::SetIds, nullptr);
        if (ctx.setgroups_allowed && raw_setgroups(0, nullptr) != 0) fail(ctx, ChildStep::SetIds, "setgroups");
    }
    if (::sethostname(spec.hostname.data(), spec.hostname.size()) != 0) fail(ctx, ChildStep::Hostname, nullptr);
    if (spec.network == Network::None) loopback_up(ctx);
    setup_filesystem(ctx);
    if (spec.process.passwd_line) append_passwd(ctx);
    if (!spec.process.create_home.empty()) create_home(ctx);
    enter_workdir(ctx);
    const bool apt_config = write_apt_config(ctx);
    // Not dumpable: the container cannot open /proc/1/exe, which is aishell (runc CVE-2019-5736).
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    const pid_t pid = spawn_command(ctx, apt_config);
    // PID 1 needs no stdio: a reader of aishell's output sees EOF when the command and aishell
    // are done, not only after the namespaces' teardown.
    for (int fd = 0; fd <= 2; ++fd) ::close(fd);
    ::close(ctx.report_fd);
    if (ctx.console_sock >= 0) ::close(ctx.console_sock);
    if (ctx.owner_sock >= 0) ::close(ctx.owner_sock);
    init_loop(pid, ctx.status_fd);
}

}  // namespace aishell::runtime
