// open_resolved and its userspace walk (resolve_path.hpp). Everything here is C-like on
// purpose: the runtime's child calls it after clone (no allocation, no exceptions, only
// syscalls), so state lives in fixed buffers on the stack.
#include "common/resolve_path.hpp"
#include "common/unique_fd.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

namespace aishell {

namespace {

constexpr int kMaxLinks = 40;    // MAXSYMLINKS, path_resolution(7)
constexpr int kMaxRetries = 16;  // openat2's EAGAIN: a rename raced with the lookup

int fail(int cur, int err) noexcept {
    if (cur >= 0) ::close(cur);
    errno = err;
    return -1;
}

int dup_dir(int fd) noexcept { return ::fcntl(fd, F_DUPFD_CLOEXEC, 3); }

// A path that is consumed from the front and can have a symlink's target put in front of what
// is left.
struct Todo {
    char text[PATH_MAX];
    std::size_t pos = 0;

    bool set(const char* a, std::size_t a_len, const char* b) noexcept {
        char joined[PATH_MAX];
        std::size_t b_len = std::strlen(b);
        if (a_len + 1 + b_len >= sizeof joined) return false;
        std::memcpy(joined, a, a_len);
        joined[a_len] = '/';
        std::memcpy(joined + a_len + 1, b, b_len + 1);
        std::memcpy(text, joined, a_len + 1 + b_len + 1);
        pos = 0;
        return true;
    }

    // The next component into comp (NUL-terminated); false at the end. last: none follows.
    bool next(char (&comp)[NAME_MAX + 1], bool& last, bool& too_long) noexcept {
        while (text[pos] == '/') ++pos;
        if (!text[pos]) return false;
        std::size_t n = 0;
        while (text[pos + n] && text[pos + n] != '/') ++n;
        too_long = n > NAME_MAX;
        if (too_long) return true;
        std::memcpy(comp, text + pos, n);
        comp[n] = '\0';
        pos += n;
        std::size_t after = pos;
        while (text[after] == '/') ++after;
        last = !text[after];
        return true;
    }
};

// The components resolved so far, "a/b/c".
struct Done {
    char text[PATH_MAX];
    std::size_t len = 0;

    bool push(const char* comp) noexcept {
        std::size_t n = std::strlen(comp);
        if (len + (len ? 1 : 0) + n >= sizeof text) return false;
        if (len) text[len++] = '/';
        std::memcpy(text + len, comp, n);
        len += n;
        text[len] = '\0';
        return true;
    }
    void pop() noexcept {
        while (len > 0 && text[len - 1] != '/') --len;
        if (len > 0) --len;  // the separator
        text[len] = '\0';
    }
};

// An O_PATH fd of root/done, walking it again with O_NOFOLLOW: after "..", rather than
// openat(cur, ".."), which a concurrent rename of cur out of root would let escape.
int rewalk(int root, const Done& done) noexcept {
    int cur = dup_dir(root);
    std::size_t i = 0;
    while (cur >= 0 && i < done.len) {
        char comp[NAME_MAX + 1];
        std::size_t n = 0;
        while (i + n < done.len && done.text[i + n] != '/') ++n;
        std::memcpy(comp, done.text + i, n);
        comp[n] = '\0';
        i += n + 1;
        int next = ::openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close_keep_errno(cur);
        cur = next;
    }
    return cur;
}

// The walk behind open_resolved_walk (out == nullptr: returns an fd) and resolve_in_root_path
// (out: returns 0 and the resolved path in out).
// One function on purpose, though long: it runs between clone and exec (runtime/child.cpp), so
// it holds raw fds with no RAII and no exceptions, and every branch of the loop changes the same
// state (cur, done, todo, missing_at, links) and returns through fail(cur, ...), which closes
// cur. Split, each piece would take all of that by reference and hand the ownership of cur back
// and forth; kept linear, each fd's close can be checked by reading down the loop.
int walk(int root, const char* path, int flags, Resolve mode, char* out, std::size_t out_size) noexcept {
    const bool in_root = mode == Resolve::InRoot;
    if (flags & O_CREAT) return fail(-1, EINVAL);
    if (!in_root && path[0] == '/') return fail(-1, EXDEV);  // as RESOLVE_BENEATH
    Todo todo;
    if (std::strlen(path) >= sizeof todo.text) return fail(-1, ENAMETOOLONG);
    std::strcpy(todo.text, path);
    Done done;
    done.text[0] = '\0';
    std::size_t missing_at = SIZE_MAX;  // path mode: done.len where the first missing component went
    int links = 0;
    int cur = dup_dir(root);
    if (cur < 0) return -1;
    char comp[NAME_MAX + 1];
    bool last = false, too_long = false;
    while (todo.next(comp, last, too_long)) {
        if (too_long) return fail(cur, ENAMETOOLONG);
        if (std::strcmp(comp, ".") == 0) continue;
        if (std::strcmp(comp, "..") == 0) {
            if (!in_root) return fail(cur, EXDEV);  // stricter than RESOLVE_BENEATH, never looser
            done.pop();                               // never above root
            if (missing_at != SIZE_MAX && done.len > missing_at) continue;
            missing_at = SIZE_MAX;
            ::close(cur);
            cur = rewalk(root, done);
            if (cur < 0) return -1;
            continue;
        }
        if (missing_at != SIZE_MAX) {  // path mode below a missing component: kept as written
            if (!done.push(comp)) return fail(cur, ENAMETOOLONG);
            continue;
        }
        int fd = ::openat(cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        struct stat st {};
        if (fd >= 0 && ::fstat(fd, &st) != 0) {
            close_keep_errno(fd);
            return fail(cur, errno);
        }
        // Path mode: a missing component, or one below a file, is where the caller's write will
        // report what is wrong; the rest is kept lexically.
        if (out && ((fd < 0 && errno == ENOENT) || (fd >= 0 && !last && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)))) {
            if (fd >= 0) ::close(fd);
            missing_at = done.len;
            if (!done.push(comp)) return fail(cur, ENAMETOOLONG);
            continue;
        }
        if (fd < 0) return fail(cur, errno);
        if (S_ISLNK(st.st_mode)) {
            if (last && !out && (flags & O_NOFOLLOW)) {
                if (!(flags & O_PATH)) {
                    ::close(fd);
                    return fail(cur, ELOOP);  // as open(O_NOFOLLOW) of a symlink
                }
                ::close(cur);
                return fd;  // O_PATH | O_NOFOLLOW: the link itself, as openat2 gives it
            }
            if (!in_root || ++links > kMaxLinks) {
                ::close(fd);
                return fail(cur, ELOOP);
            }
            char target[PATH_MAX];
            ssize_t n = ::readlinkat(fd, "", target, sizeof target);  // "" with an O_PATH fd: Linux 2.6.39
            close_keep_errno(fd);
            if (n < 0) return fail(cur, errno);
            if (static_cast<std::size_t>(n) >= sizeof target) return fail(cur, ENAMETOOLONG);
            target[n] = '\0';
            if (!todo.set(target, static_cast<std::size_t>(n), todo.text + todo.pos)) return fail(cur, ENAMETOOLONG);
            if (target[0] == '/') {  // absolute: from root again
                done.len = 0;
                done.text[0] = '\0';
                ::close(cur);
                cur = dup_dir(root);
                if (cur < 0) return -1;
            }
            continue;
        }
        if (!last || out) {
            if (!S_ISDIR(st.st_mode) && !out) {
                ::close(fd);
                return fail(cur, ENOTDIR);
            }
            if (!done.push(comp)) {
                ::close(fd);
                return fail(cur, ENAMETOOLONG);
            }
            ::close(cur);
            cur = fd;
            continue;
        }
        // The last component, not a symlink.
        if ((flags & O_DIRECTORY) && !S_ISDIR(st.st_mode)) {
            ::close(fd);
            return fail(cur, ENOTDIR);
        }
        if (flags & O_PATH) {
            ::close(cur);
            return fd;
        }
        ::close(fd);
        // O_NOFOLLOW: if it became a symlink since, ELOOP (stricter, never looser).
        int opened = ::openat(cur, comp, flags | O_NOFOLLOW | O_CLOEXEC);
        close_keep_errno(cur);
        return opened;
    }
    if (out) {
        ::close(cur);
        if (done.len >= out_size) return fail(-1, ENAMETOOLONG);
        std::memcpy(out, done.text, done.len + 1);
        return 0;
    }
    // The path named a directory (root itself, or one reached by "..", "." or a link).
    if (flags & O_PATH) return cur;
    int opened = ::openat(cur, ".", flags | O_CLOEXEC);
    close_keep_errno(cur);
    return opened;
}

}  // namespace

int open_resolved_walk(int dirfd, const char* path, int flags, Resolve mode) noexcept {
    return walk(dirfd, path, flags, mode, nullptr, 0);
}

int open_resolved(int dirfd, const char* path, int flags, Resolve mode) noexcept {
    if (flags & O_CREAT) return fail(-1, EINVAL);
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
    how.resolve = mode == Resolve::InRoot ? RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
                                          : RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const char* p = path[0] ? path : ".";
    for (int attempt = 0; attempt < kMaxRetries; ++attempt) {
        long fd = ::syscall(SYS_openat2, dirfd, p, &how, sizeof how);
        if (fd >= 0) return static_cast<int>(fd);
        switch (errno) {
            case EAGAIN: continue;
            case ENOSYS:  // before Linux 5.6
            case EPERM:   // a seccomp profile that predates openat2
            case E2BIG:   // an open_how larger than this kernel knows
            case EINVAL:  // resolve flags this kernel lacks
                return walk(dirfd, p, flags, mode, nullptr, 0);
            default: return -1;
        }
    }
    return walk(dirfd, p, flags, mode, nullptr, 0);
}

bool resolve_in_root_path(int dirfd, const char* path, char* out, std::size_t out_size) noexcept {
    return walk(dirfd, path, 0, Resolve::InRoot, out, out_size) == 0;
}

}  // namespace aishell
