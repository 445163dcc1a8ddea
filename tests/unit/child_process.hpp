// Test support: run a piece of a test in a forked child (a user namespace or a seccomp filter
// must not touch the test runner itself) and get back the text it produced.
#pragma once

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
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

// In the calling (child) process: a seccomp filter that makes openat2 fail with ENOSYS, as on
// a kernel before 5.6 (crun's tests force its fallback the same way), so that the code under
// test takes its userspace path. Irreversible: call it in a forked child only.
inline bool block_openat2() {
    sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog fprog{static_cast<unsigned short>(sizeof prog / sizeof prog[0]), prog};
    return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) == 0;
}

// body's result in a forked child where openat2 fails with ENOSYS (block_openat2), or what
// went wrong.
inline std::string output_without_openat2(const std::function<std::string()>& body) {
    int status = 0;
    std::string out = output_of_child([&]() -> std::string { return block_openat2() ? body() : "error: seccomp filter not loaded"; },
                                      status);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return "error: child failed: " + out;
    return out;
}

}  // namespace aishell::test
