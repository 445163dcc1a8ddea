// Test support: run a piece of a test in a forked child (a user namespace or a seccomp filter
// must not touch the test runner itself) and get back the text it produced.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <string_view>

#include "common/unique_fd.hpp"

namespace aishell::test {

// Forks, runs body in the child and returns what body returned (the child writes it to a pipe
// and _exits; an exception that escapes body becomes "error: ..."). wait_status gets the child's
// wait status, or -1 when fork or pipe failed (then the result says why).
inline std::string output_of_child(const std::function<std::string()>& body, int& wait_status) {
    wait_status = -1;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return "error: pipe2 failed";
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        return "error: fork failed";
    }
    if (pid == 0) {
        ::close(fds[0]);
        std::string out;
        try {
            out = body();
        } catch (const std::exception& e) {
            out = std::string("error: ") + e.what();
        } catch (...) {
            out = "error: unknown exception";
        }
        (void)!::write(fds[1], out.data(), out.size());
        ::_exit(0);
    }
    ::close(fds[1]);
    std::string got;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    while (::waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {}
    return got;
}

// In the calling (child) process: a new user namespace that maps only host root (uid and gid
// 0) to 0, as aishell's single mode maps only the caller; setgroups is denied first, as an
// unprivileged gid_map needs. /proc files take one plain write().
inline bool enter_single_id_userns() {
    auto write_proc = [](const char* path, std::string_view s) {
        UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
        return fd && ::write(fd.get(), s.data(), s.size()) == static_cast<ssize_t>(s.size());
    };
    return ::unshare(CLONE_NEWUSER) == 0 && write_proc("/proc/self/uid_map", "0 0 1") &&
           write_proc("/proc/self/setgroups", "deny") && write_proc("/proc/self/gid_map", "0 0 1");
}

}  // namespace aishell::test
