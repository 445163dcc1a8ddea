// The parent side of a container run: prepare the child's context, clone, write the id maps,
// release the child, turn its report into an error or an exit status, relay the terminal and
// forward signals until PID 1 exits, then remove the run's upper layer.
#include "runtime/container.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.hpp"
#include "common/file.hpp"
#include "runtime/child.hpp"
#include "runtime/chown_supervisor.hpp"
#include "runtime/fakeroot.hpp"
#include "runtime/terminal.hpp"

namespace aishell::runtime {

namespace {

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

// Blocks the forwarded signals and SIGCHLD for the run (they are read from a signalfd);
// the clone child inherits the mask, which PID 1 needs for sigwaitinfo.
class SignalBlock {
public:
    SignalBlock() {
        sigemptyset(&set_);
        for (int sig : kForwarded) sigaddset(&set_, sig);
        sigaddset(&set_, SIGCHLD);
        if (::sigprocmask(SIG_BLOCK, &set_, &old_) != 0) throw_errno("sigprocmask");
        fd_.reset(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
        if (!fd_) throw_errno("signalfd");
    }
    ~SignalBlock() { ::sigprocmask(SIG_SETMASK, &old_, nullptr); }
    int fd() const { return fd_.get(); }

private:
    sigset_t set_{}, old_{};
    UniqueFd fd_;
};

// Kills and reaps the child unless it was waited for.
class ChildGuard {
public:
    explicit ChildGuard(pid_t pid) : pid_(pid) {}
    ~ChildGuard() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        int st;
        while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {}
    }
    pid_t pid() const { return pid_; }
    // Gives the child up without waiting: it is exiting on its own (early status).
    pid_t release() { return std::exchange(pid_, -1); }
    // Waits (non-blocking when nohang); returns the wait status once the child is gone.
    std::optional<int> wait(bool nohang) {
        int st = 0;
        pid_t r;
        do r = ::waitpid(pid_, &st, nohang ? WNOHANG : 0); while (r < 0 && errno == EINTR);
        if (r < 0) throw_errno("waitpid");
        if (r == 0) return std::nullopt;
        pid_ = -1;
        return st;
    }

private:
    pid_t pid_;
};

struct Pipe {
    UniqueFd read, write;
};

// A socket pair for the root emulation's listener fd (child end -> ChildContext::owner_sock).
Pipe make_socket_pair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// A descriptor the command sent before its exec (its exec closed the report pipe, so it is
// queued by now); what names it in the error.
UniqueFd receive_fd(int sock, const char* what) {
    FdMessage m;
    ssize_t n;
    do n = ::recvmsg(sock, &m.msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    cmsghdr* cm = n == 1 ? CMSG_FIRSTHDR(&m.msg) : nullptr;
    if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int)))
        throw Error(std::string("start container: the command sent no ") + what);
    int fd = -1;
    std::memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return UniqueFd(fd);
}

Pipe make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

unsigned read_last_cap() {
    auto text = read_file_if_exists("/proc/sys/kernel/cap_last_cap", 64);
    if (!text) return 40;
    try {
        return static_cast<unsigned>(std::stoul(*text));
    } catch (...) {
        return 40;
    }
}

void prepare_paths(ChildContext& ctx, const ContainerSpec& spec) {
    // The overlay is mounted over the run dir itself (in the child's private mount namespace,
    // after upper/ and work/ were resolved): no rootfs/ mountpoint to create and remove per run
    // (directory churn costs milliseconds on a busy ext4).
    ctx.rootfs = spec.run_dir.string();
    ctx.layers_dir = spec.layers_dir.string();
    ctx.upper_abs = (spec.run_dir / "upper").string();
    ctx.work_abs = (spec.run_dir / "work").string();
    for (const auto& l : spec.layers) ctx.lower_abs.push_back((spec.layers_dir / l).string());
    auto rel = [&](const fs::path& p) { return p.lexically_relative(spec.layers_dir).string(); };
    ctx.overlay_data = overlay_options(spec.layers, rel(ctx.upper_abs), rel(ctx.work_abs),
                                       static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)), spec.volatile_upper);
    for (auto d : {"upper", "work"})
        if (::mkdir((spec.run_dir / d).c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", (spec.run_dir / d).string());
}

void prepare_process(ChildContext& ctx, const ContainerSpec& spec, const std::vector<sock_filter>& fakeroot_prog) {
    if (spec.process.argv.empty()) throw Error("no command to run", "give one after --, or use an image with Cmd or Entrypoint");
    for (const auto& a : spec.process.argv) ctx.argv.push_back(a.c_str());
    ctx.argv.push_back(nullptr);
    for (const auto& e : spec.process.env) ctx.envp.push_back(e.c_str());
    ctx.envp.push_back(nullptr);
    if (!spec.seccomp.empty()) {
        ctx.seccomp.len = static_cast<unsigned short>(spec.seccomp.size());
        ctx.seccomp.filter = const_cast<sock_filter*>(spec.seccomp.data());
    }
    if (spec.emulate_root_ids) {
        ctx.fakeroot.len = static_cast<unsigned short>(fakeroot_prog.size());
        ctx.fakeroot.filter = const_cast<sock_filter*>(fakeroot_prog.data());
        // The user's own APT_CONFIG wins (apt then does what it says).
        bool has_apt_config = std::any_of(spec.process.env.begin(), spec.process.env.end(),
                                          [](const std::string& e) { return e.rfind("APT_CONFIG=", 0) == 0; });
        if (!has_apt_config) {
            ctx.envp_apt = ctx.envp;
            ctx.envp_apt.insert(ctx.envp_apt.end() - 1, kAptConfigEnv);
        }
    }
    ctx.last_cap = read_last_cap();
    // The inheritable set stays empty (and the child clears the ambient one): with the caps
    // inheritable, a non-root user gains any of them by running a file whose inheritable file
    // capabilities name it, capabilities(7) "P'(permitted) = (P(inheritable) & F(inheritable)) | ...",
    // e.g. CAP_DAC_OVERRIDE to read /etc/shadow. CVE-2022-24769; runc >= 1.1.2 and moby >= 20.10.14
    // stopped setting it. Root's execs still get the bounding set through F(permitted).
    for (int i = 0; i < 2; ++i) {
        auto word = static_cast<std::uint32_t>(spec.capabilities >> (32 * i));
        ctx.caps[i].effective = ctx.caps[i].permitted = word;
        ctx.caps[i].inheritable = 0;
    }
    ctx.setgroups_allowed = spec.mapping.mode != UsernsMode::Single;
    ctx.root_mapped = spec.mapping.uid_mapped_inside(0) && spec.mapping.gid_mapped_inside(0);
}

RunResult report_to_result(const ChildReport& r) {
    auto step = static_cast<ChildStep>(r.step);
    std::string path(r.path, strnlen(r.path, sizeof r.path));
    std::string what = std::string(step_name(step)) + (path.empty() ? "" : " " + path) + ": " + std::strerror(r.err);
    if (step == ChildStep::Exec) {
        std::string hint = r.err == ENOENT ? "command not found in the container" : "permission denied or not executable";
        return {r.err == ENOENT ? 127 : 126, "exec " + path + ": " + std::strerror(r.err) + " (" + hint + ")"};
    }
    Error e("start container: " + what);
    if (step == ChildStep::Overlay) e.set_hint("overlayfs with userxattr needs Linux 5.11 or later");
    throw e;
}

// Reads at most one report; EOF means the command was exec'd (the pipe is O_CLOEXEC).
std::optional<ChildReport> read_report(int fd) {
    ChildReport r;
    std::size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = ::read(fd, reinterpret_cast<char*>(&r) + got, sizeof r - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read child report");
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    if (got == 0) return std::nullopt;
    if (got != sizeof r) throw Error("start container: truncated report from the child");
    return r;
}

bool relay(int from, int to) {
    char buf[16384];
    ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return n < 0 && (errno == EAGAIN || errno == EINTR);
    for (ssize_t off = 0; off < n;) {
        ssize_t w = ::write(to, buf + off, static_cast<std::size_t>(n - off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        off += w;
    }
    return true;
}

// Forwards signals and relays the pty until PID 1 exits. stopped: the last forwarded signal that
// asks aishell itself to stop (its caller may want to stop too).
// What ended the supervision: PID 1's wait status, or (early_status) the command's exit code
// that PID 1 reported just before exiting.
struct Supervised {
    int wait_status = 0;
    std::optional<int> early_code;
};

Supervised supervise(ChildGuard& child, const SignalBlock& sigs, int master, bool relay_stdin, ChownSupervisor* chowns,
                     int status_fd, int& stopped) {
    bool stdin_open = relay_stdin, master_open = master >= 0, chowns_open = chowns != nullptr;
    for (;;) {
        pollfd fds[5] = {{sigs.fd(), POLLIN, 0}, {master_open ? master : -1, POLLIN, 0},
                         {stdin_open ? STDIN_FILENO : -1, POLLIN, 0}, {chowns_open ? chowns->fd() : -1, POLLIN, 0},
                         {status_fd, POLLIN, 0}};
        if (::poll(fds, 5, -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll");
        }
        if (fds[0].revents & POLLIN) {
            signalfd_siginfo si;
            while (::read(sigs.fd(), &si, sizeof si) == sizeof si) {
                int sig = static_cast<int>(si.ssi_signo);
                if (sig == SIGCHLD) continue;
                if (sig == SIGWINCH && master >= 0) copy_window_size(STDIN_FILENO, master);
                else ::kill(child.pid(), sig);
                if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) stopped = sig;
            }
            if (auto st = child.wait(true)) {
                if (master_open) while (relay(master, STDOUT_FILENO)) {}  // drain what is left
                return {*st, std::nullopt};
            }
        }
        if (status_fd >= 0 && (fds[4].revents & (POLLIN | POLLHUP))) {
            int code = 0;
            ssize_t n;
            do n = ::read(status_fd, &code, sizeof code); while (n < 0 && errno == EINTR);
            if (n == static_cast<ssize_t>(sizeof code)) {
                if (master_open) while (relay(master, STDOUT_FILENO)) {}
                return {0, code};
            }
            status_fd = -1;  // EOF without a status: PID 1 died otherwise; SIGCHLD tells
        }
        if (master_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
            master_open = relay(master, STDOUT_FILENO);
        if (stdin_open && (fds[2].revents & (POLLIN | POLLHUP | POLLERR)))
            stdin_open = relay(STDIN_FILENO, master);
        // POLLHUP: no process uses the filter any more.
        if (chowns_open && (fds[3].revents & POLLIN)) chowns->handle_one();
        else if (chowns_open && (fds[3].revents & (POLLHUP | POLLERR))) chowns_open = false;
    }
}

}  // namespace

std::string overlay_options(const std::vector<std::string>& layers, const std::string& upper,
                            const std::string& work, std::size_t limit, bool volatile_upper) {
    std::string opts = "lowerdir=";
    for (std::size_t i = 0; i < layers.size(); ++i) {
        if (i) opts += ':';
        opts += layers[i];
    }
    opts += ",upperdir=" + upper + ",workdir=" + work + ",userxattr";
    if (volatile_upper) opts += ",volatile";
    if (opts.size() >= limit)
        throw Error("overlay options for " + std::to_string(layers.size()) + " layers exceed the page size (" +
                        std::to_string(opts.size()) + " bytes)",
                    "Linux 6.8 or later (lowerdir+) has no such limit; or squash the image");
    return opts;
}

int exit_status_from_wait(int st) noexcept {
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 125;
}

namespace {

// The parent's ends of what links it to the child. The child's ends are in ChildContext; the
// parent closes its copies of them once the child holds them (close_child_ends).
struct ChildLinks {
    std::optional<Pipe> owner_sock;  // the root emulation's seccomp listener comes back on it
    // -t: the command opens its pty from the container's devpts (child.cpp, open_terminal) and
    // sends the master here, so that inside, its terminal is /dev/pts/N of its own /dev/pts
    // (ttyname(3), `tty`, ssh, sudo, script need that); a host pty would be no file inside.
    std::optional<Pipe> console;
    UniqueFd dev_null;  // the command's stdin when it is not interactive
    Pipe sync;          // the parent writes one byte once the id maps are written
    Pipe report;        // a setup failure's {step, errno, path}; EOF when the exec succeeds
    std::optional<Pipe> status;  // early_status: the command's exit code, before PID 1 is gone

    void close_child_ends() {
        sync.read.reset();
        report.write.reset();
        if (owner_sock) owner_sock->write.reset();
        if (status) status->write.reset();
        if (console) console->write.reset();
    }
};

ChildLinks make_child_links(ChildContext& ctx, const ContainerSpec& spec) {
    ChildLinks links;
    if (spec.emulate_root_ids) {
        links.owner_sock = make_socket_pair();
        ctx.owner_sock = links.owner_sock->write.get();
    }
    if (spec.tty) {
        links.console = make_socket_pair();
        ctx.console_sock = links.console->write.get();
    }
    if (!spec.interactive) {
        links.dev_null.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!links.dev_null) throw_errno("open", "/dev/null");
    }
    ctx.stdin_null = links.dev_null.get();
    links.sync = make_pipe();
    links.report = make_pipe();
    ctx.sync_fd = links.sync.read.get();
    ctx.report_fd = links.report.write.get();
    if (spec.early_status) {
        links.status = make_pipe();
        ctx.status_fd = links.status->write.get();
    }
    return links;
}

// clone(2) into the container's namespaces. The child runs child_main and never returns here.
pid_t clone_container(const ChildContext& ctx, const ContainerSpec& spec) {
    unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD;
    if (!spec.in_joined_userns) flags |= CLONE_NEWUSER;
    if (spec.network == Network::None) flags |= CLONE_NEWNET;
    // The raw syscall behaves as fork() (no new stack) and skips glibc's atfork handlers.
    pid_t pid = static_cast<pid_t>(::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, nullptr));
    if (pid < 0) {
        Error e = SystemError(errno, "clone", "new namespaces");
        e.set_hint("unprivileged user namespaces must be enabled (sysctl kernel.unprivileged_userns_clone=1)");
        throw e;
    }
    if (pid == 0) child_main(ctx);
    return pid;
}

// Writes the child's id maps and lets it go on. Returns a pidfd for PID 1 when anyone is to
// wait on it after run_container returns (early status: exec's reaper), taken now, while PID 1
// is certainly ours (not yet reaped, so its pid cannot be reused).
UniqueFd release_child(pid_t pid, ChildLinks& links, const ContainerSpec& spec) {
    links.close_child_ends();
    if (!spec.in_joined_userns) write_id_maps(pid, spec.mapping);
    if (::write(links.sync.write.get(), "g", 1) != 1) throw_errno("release the child");
    links.sync.write.reset();
    UniqueFd pidfd;
    if (spec.early_status) pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (spec.on_started) spec.on_started(pidfd.get());
    return pidfd;
}

// The command runs: its terminal relayed, the root emulation's chown calls answered, signals
// forwarded, until it exits (or, with early status, until it has its exit code).
RunResult attend(ChildGuard& child, ChildLinks& links, const SignalBlock& sigs, const ContainerSpec& spec,
                 UniqueFd pidfd) {
    UniqueFd master;
    if (links.console) master = receive_fd(links.console->read.get(), "pty master");
    std::optional<ChownSupervisor> chowns;
    if (links.owner_sock)
        chowns.emplace(receive_fd(links.owner_sock->read.get(), "seccomp listener for the root emulation"),
                       spec.run_dir / "upper", spec.run_dir / kOwnerTableName, spec.mapping, spec.emulated_identity);
    std::optional<RawTerminal> raw;
    if (master && spec.interactive) raw.emplace(STDIN_FILENO);
    int stopped = 0;
    Supervised done = supervise(child, sigs, master.get(), master && spec.interactive, chowns ? &*chowns : nullptr,
                                links.status ? links.status->read.get() : -1, stopped);
    raw.reset();
    if (!done.early_code) return {exit_status_from_wait(done.wait_status), {}, stopped, {}};
    // PID 1 is exiting (its namespaces' teardown can take tens of milliseconds): hand back a
    // pidfd to know when it is gone, and leave the zombie to whoever inherits it.
    if (!pidfd) {
        child.wait(false);  // no pidfd (ENOSYS): wait here as before
        return {*done.early_code, {}, stopped, {}};
    }
    child.release();
    return {*done.early_code, {}, stopped, std::move(pidfd)};
}

}  // namespace

RunResult run_container(const ContainerSpec& spec) {
    ChildContext ctx;
    ctx.spec = &spec;
    prepare_paths(ctx, spec);
    const std::vector<sock_filter> fakeroot =
        spec.emulate_root_ids ? compile_root_emulation(ChownEmulation::Record, spec.emulated_identity.has_value())
                              : std::vector<sock_filter>{};
    prepare_process(ctx, spec, fakeroot);
    ChildLinks links = make_child_links(ctx, spec);
    SignalBlock sigs;
    // After the signals are blocked: a resize from now on is a SIGWINCH the relay sees.
    if (spec.tty) ctx.terminal = read_terminal_settings(::isatty(STDIN_FILENO) ? STDIN_FILENO : STDOUT_FILENO);

    ChildGuard child(clone_container(ctx, spec));
    UniqueFd pidfd = release_child(child.pid(), links, spec);
    if (auto r = read_report(links.report.read.get())) {
        RunResult res = report_to_result(*r);  // throws for setup failures
        child.wait(false);
        return res;
    }
    return attend(child, links, sigs, spec, std::move(pidfd));
}

}  // namespace aishell::runtime
