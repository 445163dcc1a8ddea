// Opening a path beneath a directory fd without leaving it: the one resolver every module uses
// (layer extraction, the chown supervisor, COPY/ADD, RUN --mount sources, the runtime's mount
// targets). openat2(2) (Linux 5.6) does it in the kernel; where openat2 is unavailable a
// userspace walk gives the same guarantee, one component at a time with O_NOFOLLOW.
//
// Allocation-free, exception-free and async-signal-safe (fixed PATH_MAX buffers on the stack,
// only syscalls): the runtime's child calls it between clone and exec.
#pragma once

#include <cstddef>
#include <string>

#include "common/unique_fd.hpp"

namespace aishell {

enum class Resolve {
    // No symlink anywhere on the path (the last component too, unless flags hold O_PATH and
    // O_NOFOLLOW: then the link itself) and nothing above dirfd: RESOLVE_BENEATH |
    // RESOLVE_NO_SYMLINKS. The walk refuses ".." outright (EXDEV): stricter, never looser.
    // For trees whose symlinks are data (layer extraction, the chown supervisor's upper dir).
    BeneathNoSymlinks,
    // As a chroot into dirfd would resolve it: symlinks (absolute ones too) and ".." stay
    // beneath dirfd: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS. The last component is followed
    // unless flags hold O_NOFOLLOW. For paths a container or a Dockerfile names (COPY/ADD
    // destinations, bind sources, mount targets).
    InRoot,
};

// open(path, flags | O_CLOEXEC) resolved beneath dirfd; a leading "/" means dirfd itself in
// InRoot mode. Returns the fd, or -1 with errno. O_CREAT is not supported (EINVAL): callers
// create in a resolved parent.
//
// openat2 first, retried on EAGAIN (a rename raced with a ".." lookup, openat2(2)). The walk
// runs instead when openat2 is missing (ENOSYS: before Linux 5.6), blocked (EPERM: seccomp
// profiles of container hosts that predate it; crun's safe_openat falls back on it too) or
// lacks these resolve flags (E2BIG/EINVAL), and when it keeps answering EAGAIN.
int open_resolved(int dirfd, const char* path, int flags, Resolve mode) noexcept;

// The userspace walk alone: what open_resolved does without openat2.
int open_resolved_walk(int dirfd, const char* path, int flags, Resolve mode) noexcept;

inline UniqueFd open_resolved(int dirfd, const std::string& path, int flags, Resolve mode) {
    return UniqueFd(open_resolved(dirfd, path.c_str(), flags, mode));
}

// The path (relative to dirfd, "" for dirfd itself, no "." or ".." or symlink in it) that path
// names in InRoot mode, for writers that need a name rather than an fd (libarchive's ADD of a
// tar). Components from the first missing one on are kept as written, ".." still stopping at
// dirfd; the last component is never followed. false with errno (ELOOP, ENAMETOOLONG, ...) when
// it cannot be resolved. out must hold PATH_MAX bytes.
bool resolve_in_root_path(int dirfd, const char* path, char* out, std::size_t out_size) noexcept;

}  // namespace aishell
