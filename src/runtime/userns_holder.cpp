// The user namespace holder (see userns_holder.hpp).
#include "runtime/userns_holder.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <optional>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/parse_number.hpp"
#include "common/stable_hash.hpp"
#include "common/unique_fd.hpp"
#include "runtime/helpers.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::runtime {

namespace fs = std::filesystem;

namespace {

constexpr char kHolderName[] = "aishell-userns";  // its comm, checked by joiners

struct HolderRecord {
    pid_t pid = 0;
    unsigned long long start_time = 0;  // /proc/PID/stat field 22, in clock ticks since boot
};

std::string record_text(const HolderRecord& r) { return std::to_string(r.pid) + " " + std::to_string(r.start_time) + "\n"; }

std::optional<HolderRecord> parse_record(std::string_view text) {
    HolderRecord r;
    auto sp = text.find(' ');
    if (sp == std::string_view::npos || text.empty() || text.back() != '\n') return std::nullopt;
    const char* end = text.data() + text.size() - 1;
    auto a = std::from_chars(text.data(), text.data() + sp, r.pid);
    auto b = std::from_chars(text.data() + sp + 1, end, r.start_time);
    if (a.ec != std::errc() || a.ptr != text.data() + sp || b.ec != std::errc() || b.ptr != end || r.pid <= 1) return std::nullopt;
    return r;
}

std::optional<std::string> read_small(const fs::path& path) {
    try {
        return read_file_if_exists(path, 1 << 16);
    } catch (const Error&) {
        return std::nullopt;
    }
}

// comm and start time of a process, from /proc/PID/stat ("pid (comm) state ppid ... starttime").
std::optional<std::pair<std::string, unsigned long long>> comm_and_start(pid_t pid) {
    auto stat = read_small("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return std::nullopt;
    auto open = stat->find('('), close = stat->rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
    std::istringstream rest(stat->substr(close + 2));
    std::string field;
    // After comm: state is field 3, starttime field 22.
    for (int i = 3; i < 22 && rest >> field; ++i) {}
    unsigned long long start = 0;
    if (!(rest >> start)) return std::nullopt;
    return std::make_pair(stat->substr(open + 1, close - open - 1), start);
}

std::optional<uid_t> real_uid_of(pid_t pid) {
    auto status = read_small("/proc/" + std::to_string(pid) + "/status");
    if (!status) return std::nullopt;
    auto at = status->find("\nUid:");
    if (at == std::string::npos) return std::nullopt;
    std::istringstream in(status->substr(at + 5));
    unsigned long uid = 0;
    if (!(in >> uid)) return std::nullopt;
    return static_cast<uid_t>(uid);
}

// The ranges of a /proc/PID/{uid,gid}_map as the kernel prints them ("inside outside count").
std::optional<std::vector<IdRange>> read_map(pid_t pid, const char* which) {
    auto text = read_small("/proc/" + std::to_string(pid) + "/" + which);
    if (!text) return std::nullopt;
    std::vector<IdRange> ranges;
    std::istringstream in(*text);
    IdRange r;
    while (in >> r.inside >> r.outside >> r.count) ranges.push_back(r);
    return ranges;
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool alive(int pidfd) { return ::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0; }

// A pidfd of the process a record names when it is alive, named aishell-userns, the caller's,
// started when recorded and (with a mapping) has exactly that mapping: the header comment's checks.
UniqueFd verified_holder(const fs::path& record, const IdMapping* mapping) {
    auto text = read_small(record);
    if (!text) return {};
    auto r = parse_record(*text);
    if (!r) return {};
    UniqueFd pidfd(pidfd_open(r->pid));
    if (!pidfd) return {};
    auto cs = comm_and_start(r->pid);
    if (!cs || cs->first != kHolderName || cs->second != r->start_time) return {};
    if (real_uid_of(r->pid) != ::getuid()) return {};
    if (mapping && (read_map(r->pid, "uid_map") != mapping->uids || read_map(r->pid, "gid_map") != mapping->gids)) return {};
    // Still the same process: /proc/PID was read while the pidfd pinned it alive.
    if (!alive(pidfd.get())) return {};
    return pidfd;
}

UniqueFd verified_holder(const fs::path& record, const IdMapping& mapping) { return verified_holder(record, &mapping); }

bool exited_within(int pidfd, int milliseconds) {
    pollfd p{pidfd, POLLIN, 0};  // a pidfd polls readable once its process has exited (Linux 5.3)
    int n;
    do n = ::poll(&p, 1, milliseconds); while (n < 0 && errno == EINTR);
    return n > 0;
}

// Starts a holder (it writes the record itself) and waits until it says the record is written.
bool start_holder(const fs::path& record, const IdMapping& mapping) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    UniqueFd ready_read(fds[0]), ready_write(fds[1]);
    try {
        UsernsHelper holder = spawn_in_userns(mapping, kHoldUserns, {record.string(), std::to_string(ready_write.get())},
                                              {.keep_fd = ready_write.get(), .become_root = false, .inherit_environment = false});
        ready_write.reset();
        char byte = 0;
        ssize_t n;
        do n = ::read(ready_read.get(), &byte, 1); while (n < 0 && errno == EINTR);
        if (n != 1) return false;  // it failed (the helper's destructor reaps it)
        holder.release();          // it lives on; reparented to init when this process exits
        return true;
    } catch (const Error&) {
        return false;
    }
}

}  // namespace

fs::path userns_holder_record(const fs::path& state_dir, const IdMapping& mapping) {
    return state_dir / ("userns-" + stable_hash_hex(mapping.to_string()) + ".holder");
}

bool join_userns_holder(const fs::path& state_dir, const IdMapping& mapping) {
    if (mapping.mode != UsernsMode::Subuid) return false;
    const fs::path record = userns_holder_record(state_dir, mapping);
    UniqueFd pidfd = verified_holder(record, mapping);
    if (!pidfd) {
        // One starter at a time; whoever waited finds the holder the first one started.
        const fs::path lock_path = record.string() + ".lock";
        UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!lock) return false;
        while (::flock(lock.get(), LOCK_EX) != 0)
            if (errno != EINTR) return false;
        pidfd = verified_holder(record, mapping);
        if (!pidfd && start_holder(record, mapping)) pidfd = verified_holder(record, mapping);
        if (!pidfd) return false;
    }
    // setns with a pidfd needs Linux 5.8; without it the run makes its own namespace.
    return ::setns(pidfd.get(), CLONE_NEWUSER) == 0;
}

int stop_userns_holders(const fs::path& state_dir) {
    int stopped = 0;
    std::error_code ec;
    for (fs::directory_iterator it(state_dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.starts_with("userns-") || !name.ends_with(".holder")) continue;
        UniqueFd pidfd = verified_holder(it->path(), nullptr);
        if (!pidfd) continue;
        ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGTERM, nullptr, 0);
        if (!exited_within(pidfd.get(), 1000)) {
            ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
            exited_within(pidfd.get(), 1000);
        }
        ++stopped;
    }
    return stopped;
}

int hold_userns_here(const std::vector<std::string>& args) {
    if (args.size() != 2) throw Error(std::string(kHoldUserns.name) + ": expected RECORD FD", kHelperHint);
    const fs::path record = args[0];
    const int ready = parse_number<int>(args[1], {.what = "FD", .where = kHoldUserns.name, .hint = kHelperHint});
    if (ready < 3) throw Error(std::string(kHoldUserns.name) + ": FD " + args[1] + " is not a pipe aishell passed", kHelperHint);
    // Detach from whoever started it: own session, no terminal, stdio on /dev/null (a caller
    // reading aishell's output to EOF must not wait for the holder), cwd /, a name joiners check.
    ::setsid();
    if (int null = ::open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
        ::dup2(null, STDIN_FILENO);
        ::dup2(null, STDOUT_FILENO);
        ::dup2(null, STDERR_FILENO);
        ::close(null);
    }
    // Nothing inherited lives on with it: no descriptor but READY_FD (a pipe someone waits on
    // for EOF would never get it), no blocked signal (SIGTERM must end it).
    const bool closed = (ready == 3 || ::syscall(SYS_close_range, 3u, static_cast<unsigned>(ready) - 1, 0u) == 0) &&
                        ::syscall(SYS_close_range, static_cast<unsigned>(ready) + 1, ~0u, 0u) == 0;
    if (!closed)
        for (int fd = 3; fd < 4096; ++fd)
            if (fd != ready) ::close(fd);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::chdir("/") != 0) return 1;
    ::prctl(PR_SET_NAME, kHolderName, 0, 0, 0);
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGPIPE, SIG_IGN);
    auto cs = comm_and_start(::getpid());
    if (!cs) return 1;
    try {
        write_file_atomic(record, record_text({::getpid(), cs->second}), 0600);
    } catch (const Error&) {
        return 1;
    }
    // A shared lock on the record marks it in use for garbage collection's tmp/ sweep.
    UniqueFd held(::open(record.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!held || ::flock(held.get(), LOCK_SH) != 0) return 1;
    UniqueFd watch(::inotify_init1(IN_CLOEXEC));
    if (!watch || ::inotify_add_watch(watch.get(), record.c_str(), IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) < 0) return 1;
    if (::write(ready, "r", 1) != 1) return 1;
    ::close(ready);
    const std::string mine = record_text({::getpid(), cs->second});
    for (;;) {
        pollfd p{watch.get(), POLLIN, 0};
        int n = ::poll(&p, 1, 60 * 1000);
        if (n < 0 && errno != EINTR) return 1;
        if (n > 0) {
            char buf[4096];
            (void)!::read(watch.get(), buf, sizeof buf);
        }
        if (read_small(record) != mine) return 0;  // removed or replaced: no longer the holder
    }
}

}  // namespace aishell::runtime
