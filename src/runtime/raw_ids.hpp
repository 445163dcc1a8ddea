// set*id in a child made by a raw clone (container.cpp, userns_exec.cpp, and the command PID 1
// starts): the plain system calls, not glibc's wrappers.
//
// glibc's setresuid/setresgid/setgroups change the ids of every thread of the process (POSIX
// semantics): nptl's setxid broadcast walks its list of threads, waits for each one that has
// not started yet, and signals the rest. After a raw clone that list is the parent's copy
// while the child has one thread, so the wrapper can wait forever for a thread that exists
// only in the parent: `aishell` building a project image hung so (gdb: __nptl_setxid ->
// setxid_mark_thread, on the spinner thread's futex), one start in ten under load. The
// system call changes the calling thread only, which here is the whole process. Both are
// async-signal-safe (no lock, no allocation), as code between clone and exec must be.
#pragma once

#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstddef>

namespace aishell::runtime {

inline int raw_setresuid(uid_t r, uid_t e, uid_t s) noexcept { return static_cast<int>(::syscall(SYS_setresuid, r, e, s)); }
inline int raw_setresgid(gid_t r, gid_t e, gid_t s) noexcept { return static_cast<int>(::syscall(SYS_setresgid, r, e, s)); }
inline int raw_setgroups(std::size_t n, const gid_t* groups) noexcept {
    return static_cast<int>(::syscall(SYS_setgroups, n, groups));
}

}  // namespace aishell::runtime
