// Layer extraction (see layer_extract.hpp): path cleaning, the beneath-the-root resolver
// (openat2 or an O_NOFOLLOW walk), and the entry writer; the hashing decompressor that feeds
// them is layer_stream.*.
#include "oci/layer_extract.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/error.hpp"
#include "common/path_components.hpp"
#include "common/resolve_path.hpp"
#include "common/unique_fd.hpp"
#include "oci/archive_api.hpp"
#include "oci/layer_stream.hpp"

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

namespace aishell::oci {

namespace {

using media_type::Compression;

// ---------------------------------------------------------------------------------------------
// Paths. A cleaned path is "" (the layer root) or components joined by "/", none of them
// empty, "." or "..".

std::string clean_path(std::string_view raw) {
    std::vector<std::string_view> parts;
    for (std::string_view part : PathComponents(raw)) {
        if (part == ".") continue;
        if (part == "..") {
            if (parts.empty()) throw Error("path escapes the layer root");
            parts.pop_back();
            continue;
        }
        parts.push_back(part);
    }
    std::string out;
    for (auto p : parts) {
        if (!out.empty()) out += '/';
        out += p;
    }
    return out;
}

std::pair<std::string, std::string> split_parent(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos) return {"", path};
    return {path.substr(0, slash), path.substr(slash + 1)};
}

bool is_beneath(const std::string& path, const std::string& dir) {
    return dir.empty() || path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                                          path[dir.size()] == '/');
}

// ---------------------------------------------------------------------------------------------
// Small syscall helpers.

// chmod of the inode an O_PATH fd refers to (never a symlink: callers check). fchmod() refuses
// O_PATH fds; fchmodat2 (Linux 6.6) takes AT_EMPTY_PATH, older kernels go through /proc.
void chmod_opath(int fd, mode_t mode, const std::string& what) {
    if (::syscall(SYS_fchmodat2, fd, "", mode, AT_EMPTY_PATH) == 0) return;
    if (errno != ENOSYS && errno != EINVAL) throw_errno("chmod", what);
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (::chmod(proc.c_str(), mode) != 0) throw_errno("chmod", what);
}

struct timespec_pair {
    struct timespec t[2];
};

timespec_pair entry_times(archive_entry* e) {
    timespec_pair ts{};
    ts.t[1].tv_sec = archive_entry_mtime(e);
    ts.t[1].tv_nsec = archive_entry_mtime_nsec(e);
    if (archive_entry_atime_is_set(e)) {
        ts.t[0].tv_sec = archive_entry_atime(e);
        ts.t[0].tv_nsec = archive_entry_atime_nsec(e);
    } else {
        ts.t[0] = ts.t[1];
    }
    return ts;
}

struct Xattr {
    std::string name;
    std::string value;
};

std::vector<Xattr> entry_xattrs(archive_entry* e) {
    std::vector<Xattr> out;
    if (archive_entry_xattr_reset(e) == 0) return out;
    const char* name = nullptr;
    const void* value = nullptr;
    std::size_t size = 0;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
        out.push_back({name, std::string(static_cast<const char*>(value), size)});
    return out;
}

// user.* (but not user.overlay.*: those would steer overlayfs, which honours them on lower
// dirs when mounted with userxattr) and security.capability (file capabilities, e.g. ping).
bool xattr_kept(const std::string& name) {
    if (name == "security.capability") return true;
    return name.rfind("user.", 0) == 0 && name.rfind("user.overlay.", 0) != 0;
}

// ---------------------------------------------------------------------------------------------
// Resolving directories beneath the layer root without following any symlink.

class Resolver {
public:
    Resolver(int root, bool force_walk, std::function<void(const std::string&)> on_create)
        : root_(root), use_walk_(force_walk), on_create_(std::move(on_create)) {}

    bool used_walk() const noexcept { return use_walk_; }

    // An O_PATH fd of directory `path` (cleaned). Missing components are created (mode 0700,
    // reported to on_create) when create is set; otherwise ENOENT is an error.
    UniqueFd open_dir(const std::string& path, bool create) {
        if (path.empty()) return reopen_root(O_PATH);
        if (auto fd = open_existing(path, O_PATH)) return std::move(*fd);
        if (!create) throw SystemError(ENOENT, "open directory", path);
        return walk(path, create);
    }

    // An O_RDONLY fd of existing directory `path` (cleaned), for fchmod/fchown/futimens/xattrs:
    // one openat2 for the whole path, or the walk to its parent and an O_NOFOLLOW open.
    UniqueFd open_dir_rdonly(const std::string& path) {
        if (path.empty()) return reopen_root(O_RDONLY);
        if (auto fd = open_existing(path, O_RDONLY)) return std::move(*fd);
        throw SystemError(ENOENT, "open directory", path);
    }

private:
    UniqueFd reopen_root(int flags) {
        int fd = ::openat(root_, ".", flags | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw_errno("open layer root");
        return UniqueFd(fd);
    }

    // The directory path, nullopt when a component is missing (the walk creates it): one
    // resolver call (common/resolve_path.hpp: openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, else
    // its O_NOFOLLOW walk; force_walk takes the walk at once). No symlink on the way, the last
    // component included, so the fd is never a symlink's target.
    std::optional<UniqueFd> open_existing(const std::string& path, int flags) {
        const int how = flags | O_DIRECTORY;
        UniqueFd fd(use_walk_ ? open_resolved_walk(root_, path.c_str(), how, Resolve::BeneathNoSymlinks)
                              : open_resolved(root_, path.c_str(), how, Resolve::BeneathNoSymlinks));
        if (fd) return fd;
        switch (errno) {
            case ENOENT: return std::nullopt;
            case ELOOP: throw Error("'" + path + "' goes through a symlink");
            case ENOTDIR: throw Error("'" + path + "' goes through something that is not a directory");
            case EXDEV: throw Error("'" + path + "' escapes the layer root");
            default: throw_errno("open directory", path);
        }
    }

    // Creating what is missing: one openat(O_NOFOLLOW) per component, mkdir where one is absent.
    // Components never contain "/", "." or "..", so each step stays beneath the previous one.
    UniqueFd walk(const std::string& path, bool create) {
        UniqueFd cur = reopen_root(O_PATH);
        std::string so_far;
        for (std::string_view component : PathComponents(path)) {
            const std::string name(component);
            so_far += (so_far.empty() ? "" : "/") + name;
            cur = step(cur.get(), name, so_far, create);
        }
        return cur;
    }

    UniqueFd step(int dir, const std::string& name, const std::string& so_far, bool create) {
        for (int attempt = 0; attempt < 2; ++attempt) {
            int fd = ::openat(dir, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0) return UniqueFd(fd);
            int err = errno;
            struct stat st;
            if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (S_ISLNK(st.st_mode)) throw Error("'" + so_far + "' is a symlink");
                if (!S_ISDIR(st.st_mode)) throw Error("'" + so_far + "' is not a directory");
                throw SystemError(err, "open directory", so_far);
            }
            if (errno != ENOENT || !create) throw SystemError(errno, "open directory", so_far);
            if (::mkdirat(dir, name.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir", so_far);
            if (on_create_) on_create_(so_far);
        }
        throw SystemError(ENOENT, "open directory", so_far);
    }

    int root_;
    bool use_walk_;
    std::function<void(const std::string&)> on_create_;
};

// ---------------------------------------------------------------------------------------------
// The entry writer.

// What creating an entry already gives it, so that chown and chmod calls that would change
// nothing are left out (a Debian image: ~6,800 entries, nearly all 0:0 and 0644/0755).
//   - Owner: the creator's fsuid (= euid: aishell never calls setfsuid) and its fsgid, or the
//     parent directory's gid when that is setgid. Directories made during the extraction get
//     their real owner and mode only at the end, so they are setgid exactly when the root is,
//     and the root's gid is then the group of everything made beneath it.
//   - Mode: the create mode less the umask, plus S_ISGID on a directory made beneath a setgid
//     root. A default ACL on the root (inherited by everything made beneath) replaces the umask
//     with its own entries, and the umask may be unreadable (/proc not mounted): then every
//     mode is set with chmod, as before.
// Skipping a chown that would not change the owner loses nothing: chown of a regular file also
// clears setuid/setgid and security.capability, but a file we have just created has neither yet
// (both are set after the owner).
struct CreationDefaults {
    uid_t uid = 0;
    gid_t gid = 0;
    std::optional<mode_t> umask;  // nullopt: modes after creation are not predictable
    mode_t dir_bits = 0;          // S_ISGID when the root is setgid
    struct stat root{};

    static CreationDefaults probe(int root_fd) {
        CreationDefaults d;
        if (::fstat(root_fd, &d.root) != 0) throw_errno("stat layer root");
        d.uid = ::geteuid();
        d.gid = (d.root.st_mode & S_ISGID) ? d.root.st_gid : ::getegid();
        d.dir_bits = d.root.st_mode & S_ISGID;
        if (!has_default_acl(root_fd)) d.umask = read_umask();
        return d;
    }

    // The mode an entry created with `create` has (nullopt when that cannot be known).
    std::optional<mode_t> created_mode(mode_t create, bool dir) const {
        if (!umask) return std::nullopt;
        return (create & 07777 & ~*umask) | (dir ? dir_bits : 0);
    }

private:
    static bool has_default_acl(int fd) {
        if (::fgetxattr(fd, "system.posix_acl_default", nullptr, 0) >= 0) return true;
        return errno != ENODATA && errno != ENOTSUP;  // unsure: treat as present
    }

    // The umask without changing it (a process-wide setting): "Umask:" in /proc/self/status
    // (Linux 4.7).
    static std::optional<mode_t> read_umask() {
        UniqueFd fd(::open("/proc/self/status", O_RDONLY | O_CLOEXEC));
        if (!fd) return std::nullopt;
        char buf[4096];
        std::string text;
        for (;;) {
            ssize_t n = ::read(fd.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            text.append(buf, static_cast<std::size_t>(n));
        }
        auto pos = text.find("\nUmask:");
        if (pos == std::string::npos) return std::nullopt;
        char* end = nullptr;
        unsigned long value = std::strtoul(text.c_str() + pos + 7, &end, 8);
        if (end == text.c_str() + pos + 7 || value > 0777) return std::nullopt;
        return static_cast<mode_t>(value);
    }
};

// Metadata of a directory, applied at the end (see the header).
struct DirMeta {
    std::string path;
    mode_t mode = 0755;
    std::optional<std::pair<uid_t, gid_t>> owner;
    std::optional<timespec_pair> times;
    std::vector<Xattr> xattrs;
    // What the directory has now: its mode when made (nullopt: unknown) and owner.
    std::optional<mode_t> created_mode;
    std::pair<uid_t, gid_t> created_owner{};
    bool removed = false;
};

// Regular files' data goes out through this much buffer: libarchive hands the tar's bytes out
// in the decompressor's blocks, and one write per file is the common case.
constexpr std::size_t kWriteBuffer = 1 << 20;
// O_PATH fds of recently used parent directories. Tars list a directory's entries together,
// but return to a parent after each subdirectory: 8 fds take a Debian image from ~1,300
// parent lookups to ~750 (one per directory).
constexpr std::size_t kParentCache = 8;

class Extractor {
public:
    Extractor(int root, const ExtractOptions& options, ExtractStats& stats)
        : root_(root), options_(options), stats_(stats),
          resolver_(root, options.force_walk, [this](const std::string& p) { implicit_dir(p); }),
          defaults_(CreationDefaults::probe(root)) {
        // The layer root: 0755 unless the tar has an entry for "." saying otherwise.
        DirMeta r{""};
        r.created_mode = defaults_.root.st_mode & 07777;
        r.created_owner = {defaults_.root.st_uid, defaults_.root.st_gid};
        dirs_.push_back(std::move(r));
        dir_index_[""] = 0;
    }

    void entry(archive* tar, archive_entry* e) {
        const char* raw = archive_entry_pathname(e);
        if (!raw) throw Error("layer entry without a name");
        with_context("layer entry '" + std::string(raw) + "'", [&] { write_entry(tar, e, clean_path(raw)); });
    }

    // Applies directory metadata deepest first (creation order reversed: a directory is always
    // created before anything inside it).
    void finish() {
        parents_.clear();
        for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
            if (it->removed) continue;
            with_context("layer directory '" + (it->path.empty() ? std::string(".") : it->path) + "'",
                         [&] { apply_dir_meta(*it); });
        }
        stats_.used_walk_fallback = resolver_.used_walk();
    }

private:
    void write_entry(archive* tar, archive_entry* e, const std::string& path) {
        if (path.empty()) {
            if (archive_entry_filetype(e) != AE_IFDIR || archive_entry_hardlink(e))
                throw Error("only a directory may name the layer root");
            record_dir(path, e);
            return;
        }
        auto [parent_path, leaf] = split_parent(path);
        if (leaf.rfind(".wh.", 0) == 0) return whiteout(parent_path, leaf);
        int parent = parent_dir(parent_path);
        if (const char* target = archive_entry_hardlink(e)) return hardlink(parent, leaf, path, target);
        switch (archive_entry_filetype(e)) {
            case AE_IFREG: return regular(tar, e, parent, leaf, path);
            case AE_IFDIR: return directory(e, parent, leaf, path);
            case AE_IFLNK: return symlink(e, parent, leaf, path);
            case AE_IFCHR:
            case AE_IFBLK:
            case AE_IFIFO: return node(e, parent, leaf, path);
            default: throw Error("unsupported entry type " + std::to_string(archive_entry_filetype(e)));
        }
    }

    // The parent's O_PATH fd from a small LRU cache. The fd stays valid until the next call:
    // removals (forget_dirs_under) only drop directories beneath the entry being written, and
    // an entry's parent never is.
    int parent_dir(const std::string& parent_path) {
        for (std::size_t i = parents_.size(); i-- > 0;) {
            if (parents_[i].path != parent_path) continue;
            std::rotate(parents_.begin() + static_cast<std::ptrdiff_t>(i),
                        parents_.begin() + static_cast<std::ptrdiff_t>(i) + 1, parents_.end());
            return parents_.back().fd.get();
        }
        UniqueFd fd = resolver_.open_dir(parent_path, true);
        if (parents_.size() == kParentCache) parents_.erase(parents_.begin());
        parents_.push_back({parent_path, std::move(fd)});
        return parents_.back().fd.get();
    }

    // Makes room for a new entry `leaf` whose creation said EEXIST: an existing directory stays
    // when a directory is wanted; anything else is removed (a symlink is unlinked, never
    // followed). Returns true when an existing directory was kept.
    bool make_room(int parent, const std::string& leaf, const std::string& path, bool want_dir) {
        struct stat st;
        if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) return false;
            throw_errno("stat", path);
        }
        if (S_ISDIR(st.st_mode)) {
            if (want_dir) return true;
            remove_tree_at(parent, leaf);
            forget_dirs_under(path);
        } else if (::unlinkat(parent, leaf.c_str(), 0) != 0) {
            throw_errno("remove", path);
        }
        return false;
    }

    // Creates the entry with make() (mkdirat, symlinkat, O_CREAT|O_EXCL, ...: never through an
    // existing name). Into a fresh layer dir that is one call; a name the tar already used
    // (a later entry replaces an earlier one) gives EEXIST, is removed, and make() runs again.
    // Returns make()'s result (an fd for openat).
    template <typename Make>
    int create(int parent, const std::string& leaf, const std::string& path, const char* what, Make make) {
        int r = make();
        if (r >= 0 || errno != EEXIST) {
            if (r < 0) throw_errno(what, path);
            return r;
        }
        make_room(parent, leaf, path, false);
        r = make();
        if (r < 0) throw_errno(what, path);
        return r;
    }

    void forget_dirs_under(const std::string& path) {
        for (auto& d : dirs_)
            if (!d.removed && is_beneath(d.path, path)) {
                d.removed = true;
                dir_index_.erase(d.path);
            }
        // The caller may be holding its parent's fd, which is never beneath the removed entry.
        std::erase_if(parents_, [&](const CachedDir& c) { return is_beneath(c.path, path); });
    }

    void implicit_dir(const std::string& path) { add_dir(path, 0700); }

    void add_dir(const std::string& path, mode_t create_mode) {
        dir_index_[path] = dirs_.size();
        DirMeta d{path};
        d.created_mode = defaults_.created_mode(create_mode, true);
        d.created_owner = {defaults_.uid, defaults_.gid};
        dirs_.push_back(std::move(d));
        ++stats_.dirs;
    }

    void record_dir(const std::string& path, archive_entry* e) {
        auto it = dir_index_.find(path);
        if (it == dir_index_.end()) {
            implicit_dir(path);
            it = dir_index_.find(path);
        }
        DirMeta& d = dirs_[it->second];
        d.mode = archive_entry_perm(e) | (archive_entry_mode(e) & (S_ISUID | S_ISGID | S_ISVTX));
        d.owner = std::pair{static_cast<uid_t>(archive_entry_uid(e)), static_cast<gid_t>(archive_entry_gid(e))};
        d.times = entry_times(e);
        d.xattrs = entry_xattrs(e);
    }

    static mode_t entry_mode(archive_entry* e) { return archive_entry_mode(e) & 07777; }

    // True when an entry made with `create` already has mode `want`.
    bool created_with(mode_t create, mode_t want, bool dir) const {
        auto m = defaults_.created_mode(create, dir);
        return m && *m == want;
    }

    void directory(archive_entry* e, int parent, const std::string& leaf, const std::string& path) {
        // Made with its permission bits when they let us write and search beneath it (nearly
        // always 0755), else 0700; the real mode comes in finish() when it differs.
        mode_t want = archive_entry_perm(e) & 0777;
        mode_t create_mode = (want & 0700) == 0700 ? want : 0700;
        if (::mkdirat(parent, leaf.c_str(), create_mode) == 0) {
            add_dir(path, create_mode);
        } else {
            if (errno != EEXIST) throw_errno("mkdir", path);
            if (!make_room(parent, leaf, path, true)) {
                if (::mkdirat(parent, leaf.c_str(), create_mode) != 0) throw_errno("mkdir", path);
                add_dir(path, create_mode);
            }
        }
        record_dir(path, e);
    }

    void regular(archive* tar, archive_entry* e, int parent, const std::string& leaf, const std::string& path) {
        const mode_t want = entry_mode(e);
        const mode_t create_mode = want & 0777;  // setuid/setgid only after the owner (chown clears them)
        UniqueFd fd(create(parent, leaf, path, "create", [&] {
            return ::openat(parent, leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, create_mode);
        }));
        copy_data(tar, fd.get(), path, archive_entry_size(e));
        set_owner(fd.get(), "", AT_EMPTY_PATH, e, path);
        if (!created_with(create_mode, want, false) && ::fchmod(fd.get(), want) != 0) throw_errno("chmod", path);
        set_xattrs(fd.get(), entry_xattrs(e), path);
        auto ts = entry_times(e);
        if (::futimens(fd.get(), ts.t) != 0) throw_errno("set times", path);
        ++stats_.files;
    }

    // Writes the entry's data, coalescing libarchive's blocks into few large writes. Sparse
    // entries come as blocks at offsets: a gap starts a new write, holes stay holes, and only a
    // trailing hole needs ftruncate (the file is new and empty).
    void copy_data(archive* tar, int fd, const std::string& path, la_int64_t size) {
        if (write_buf_.empty()) write_buf_.resize(kWriteBuffer);
        std::size_t used = 0;
        la_int64_t buf_offset = 0, end = 0;
        for (;;) {
            const void* data = nullptr;
            std::size_t len = 0;
            la_int64_t offset = 0;
            int r = archive_read_data_block(tar, &data, &len, &offset);
            if (r == ARCHIVE_EOF) break;
            if (r < ARCHIVE_WARN) throw Error("read data: " + archive_message(tar));
            if (len == 0) continue;
            if (used > 0 && (offset != buf_offset + static_cast<la_int64_t>(used) || used + len > write_buf_.size())) {
                write_at(fd, write_buf_.data(), used, buf_offset, path);
                used = 0;
            }
            if (len >= write_buf_.size()) {
                write_at(fd, static_cast<const char*>(data), len, offset, path);
            } else {
                if (used == 0) buf_offset = offset;
                std::memcpy(write_buf_.data() + used, data, len);
                used += len;
            }
            end = std::max(end, offset + static_cast<la_int64_t>(len));
        }
        if (used > 0) write_at(fd, write_buf_.data(), used, buf_offset, path);
        if (end < size && ::ftruncate(fd, size) != 0) throw_errno("truncate", path);  // a trailing hole
    }

    static void write_at(int fd, const char* p, std::size_t len, la_int64_t offset, const std::string& path) {
        while (len > 0) {
            ssize_t n = ::pwrite(fd, p, len, offset);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_errno("write", path);
            }
            p += n;
            len -= static_cast<std::size_t>(n);
            offset += n;
        }
    }

    void symlink(archive_entry* e, int parent, const std::string& leaf, const std::string& path) {
        const char* target = archive_entry_symlink(e);
        if (!target) throw Error("symlink without a target");
        // The target is stored as is: it is only ever resolved inside the container.
        create(parent, leaf, path, "symlink", [&] { return ::symlinkat(target, parent, leaf.c_str()); });
        set_owner(parent, leaf.c_str(), AT_SYMLINK_NOFOLLOW, e, path);
        auto ts = entry_times(e);
        if (::utimensat(parent, leaf.c_str(), ts.t, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("set times", path);
        stats_.skipped_xattrs += entry_xattrs(e).size();  // user.* is not allowed on symlinks
        ++stats_.symlinks;
    }

    void hardlink(int parent, const std::string& leaf, const std::string& path, const char* raw_target) {
        std::string target = with_context("hardlink target '" + std::string(raw_target) + "'",
                                          [&] { return clean_path(raw_target); });
        if (target.empty()) throw Error("hardlink to the layer root");
        if (target == path) throw Error("hardlink to itself");
        auto [tparent_path, tleaf] = split_parent(target);
        const std::string missing = "hardlink target '" + target + "' is not in the layer";
        UniqueFd tparent;
        try {
            tparent = resolver_.open_dir(tparent_path, false);
        } catch (SystemError& e) {
            if (e.code() == ENOENT) throw Error(missing);
            e.add_context("hardlink target '" + target + "'");
            throw;
        } catch (Error& e) {
            e.add_context("hardlink target '" + target + "'");
            throw;
        }
        struct stat st;
        if (::fstatat(tparent.get(), tleaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) throw Error(missing);
            throw_errno("stat", target);
        }
        if (S_ISDIR(st.st_mode)) throw Error("hardlink target '" + target + "' is a directory");
        // Without AT_SYMLINK_FOLLOW a symlink target is linked itself, as tar does.
        create(parent, leaf, path, ("link to " + target).c_str(),
               [&, &tleaf = tleaf] { return ::linkat(tparent.get(), tleaf.c_str(), parent, leaf.c_str(), 0); });
        ++stats_.hardlinks;
    }

    void node(archive_entry* e, int parent, const std::string& leaf, const std::string& path) {
        mode_t type = archive_entry_filetype(e);
        bool device = type != AE_IFIFO;
        if (device && options_.rootless) {
            ++stats_.skipped_devices;
            return;
        }
        dev_t rdev = device ? makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e)) : 0;
        int r = ::mknodat(parent, leaf.c_str(), type | 0600, rdev);
        if (r != 0 && errno == EEXIST) {
            make_room(parent, leaf, path, false);
            r = ::mknodat(parent, leaf.c_str(), type | 0600, rdev);
        }
        if (r != 0) {
            if (device && errno == EPERM) {  // probed, as umoci does: no CAP_MKNOD here
                ++stats_.skipped_devices;
                return;
            }
            throw_errno("mknod", path);
        }
        finish_node(e, parent, leaf, path);
        ++(device ? stats_.devices : stats_.fifos);
    }

    // Owner, mode and times of a node we just made, through an O_PATH fd that cannot be a
    // symlink (O_NOFOLLOW, checked).
    void finish_node(archive_entry* e, int parent, const std::string& leaf, const std::string& path) {
        int raw = ::openat(parent, leaf.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (raw < 0) throw_errno("open", path);
        UniqueFd fd(raw);
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) throw_errno("stat", path);
        if (S_ISLNK(st.st_mode)) throw Error("node replaced by a symlink while extracting");
        set_owner(fd.get(), "", AT_EMPTY_PATH, e, path);
        chmod_opath(fd.get(), entry_mode(e), path);
        auto ts = entry_times(e);
        if (::utimensat(parent, leaf.c_str(), ts.t, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("set times", path);
        stats_.skipped_xattrs += entry_xattrs(e).size();
    }

    void whiteout(const std::string& parent_path, const std::string& leaf) {
        if (leaf == ".wh..wh..opq") return opaque(parent_path);
        if (leaf.rfind(".wh..wh.", 0) == 0) return;  // aufs metadata (.wh..wh.plnk, ...)
        std::string name = leaf.substr(4);
        if (name.empty() || name == "." || name == "..") throw Error("whiteout of '" + name + "' is not allowed");
        int parent = parent_dir(parent_path);
        std::string path = parent_path.empty() ? name : parent_path + "/" + name;
        // overlayfs whiteout: a 0/0 character device. Allowed in a user namespace since Linux 5.8.
        int r = ::mknodat(parent, name.c_str(), S_IFCHR, makedev(0, 0));
        if (r != 0 && errno == EEXIST) {
            make_room(parent, name, path, false);
            r = ::mknodat(parent, name.c_str(), S_IFCHR, makedev(0, 0));
        }
        if (r != 0)
            throw SystemError(errno, "mknod whiteout", path)
                .set_hint("the kernel must allow 0/0 character devices in a user namespace (Linux 5.8+)");
        ++stats_.whiteouts;
    }

    void opaque(const std::string& dir_path) {
        int dir = parent_dir(dir_path);
        int raw = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);  // O_PATH fds take no xattrs
        if (raw < 0) throw_errno("open", dir_path.empty() ? "." : dir_path);
        UniqueFd fd(raw);
        if (::fsetxattr(fd.get(), "user.overlay.opaque", "y", 1, 0) != 0)
            throw SystemError(errno, "set user.overlay.opaque", dir_path.empty() ? "." : dir_path)
                .set_hint("the store's filesystem must support user xattrs");
        ++stats_.opaque_dirs;
    }

    void set_owner(int fd, const char* name, int flags, archive_entry* e, const std::string& path) {
        std::pair<uid_t, gid_t> want{static_cast<uid_t>(archive_entry_uid(e)), static_cast<gid_t>(archive_entry_gid(e))};
        if (want == std::pair{defaults_.uid, defaults_.gid}) return;  // created with it
        set_owner_ids(fd, name, flags, want.first, want.second, path);
    }

    void set_owner_ids(int fd, const char* name, int flags, uid_t uid, gid_t gid, const std::string& path) {
        if (options_.owners == ExtractOptions::Owners::Ignore) return;
        if (::fchownat(fd, name, uid, gid, flags) == 0) return;
        if (errno == EINVAL && options_.owners == ExtractOptions::Owners::PreserveMapped) {
            ++stats_.unmapped_owners;  // single mode: that id has no mapping here
            record_unmapped_owner(fd, name, LayerOwner{uid, gid}, path);
            return;
        }
        throw SystemError(errno, "chown " + std::to_string(uid) + ":" + std::to_string(gid), path);
    }

    void record_unmapped_owner(int fd, const char* name, LayerOwner owner, const std::string& path) {
        if (path.empty() || path == ".") return;  // the tree's root is no entry of the layer
        auto id = entry_identity_at(fd, name);
        if (id) stats_.unmapped_owner_records.set(path, OwnerRecord::for_entry(owner, *id));
    }

    void set_xattrs(int fd, const std::vector<Xattr>& xattrs, const std::string& path) {
        for (const auto& x : xattrs) {
            if (!xattr_kept(x.name)) {
                ++stats_.skipped_xattrs;
                continue;
            }
            if (::fsetxattr(fd, x.name.c_str(), x.value.data(), x.value.size(), 0) == 0) continue;
            if (errno == EPERM || errno == ENOTSUP || errno == EACCES || errno == EINVAL) {
                ++stats_.skipped_xattrs;  // probed: e.g. security.capability without CAP_SETFCAP
                continue;
            }
            throw_errno("set xattr " + x.name, path);
        }
    }

    // xattrs, owner, mode and times of a directory, each only when it is not already so
    // (nearly every directory needs only its mtime, which its children have bumped).
    void apply_dir_meta(const DirMeta& d) {
        const bool chown_needed = d.owner && *d.owner != d.created_owner;
        const bool chmod_needed = !d.created_mode || *d.created_mode != d.mode;
        if (d.xattrs.empty() && !chown_needed && !chmod_needed && !d.times) return;
        UniqueFd fd = resolver_.open_dir_rdonly(d.path);
        set_xattrs(fd.get(), d.xattrs, d.path);
        if (chown_needed) set_owner_ids(fd.get(), "", AT_EMPTY_PATH, d.owner->first, d.owner->second, d.path);
        // chown of a directory keeps setgid, but the mode is set after it all the same.
        if ((chmod_needed || chown_needed) && ::fchmod(fd.get(), d.mode) != 0) throw_errno("chmod");
        if (d.times && ::futimens(fd.get(), d.times->t) != 0) throw_errno("set times");
    }

    struct CachedDir {
        std::string path;
        UniqueFd fd;
    };

    int root_;
    const ExtractOptions& options_;
    ExtractStats& stats_;
    Resolver resolver_;
    CreationDefaults defaults_;
    std::vector<DirMeta> dirs_;
    std::unordered_map<std::string, std::size_t> dir_index_;
    std::vector<CachedDir> parents_;  // least recently used first
    std::vector<char> write_buf_;
};

void remove_children(int dir, const std::string& what) {
    int dup_fd = ::fcntl(dir, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) throw_errno("dup", what);
    DIR* stream = ::fdopendir(dup_fd);
    if (!stream) {
        ::close(dup_fd);
        throw_errno("opendir", what);
    }
    std::vector<std::string> names;
    errno = 0;
    while (dirent* d = ::readdir(stream)) {
        std::string_view n = d->d_name;
        if (n != "." && n != "..") names.emplace_back(n);
    }
    int err = errno;
    ::closedir(stream);
    if (err != 0) throw SystemError(err, "readdir", what);
    for (const auto& n : names) remove_tree_at(dir, n);
}

}  // namespace

ExtractStats extract_layer(int compressed_fd, media_type::Compression compression, int dest_dirfd,
                           const ExtractOptions& options) {
    ExtractStats stats;
    ScopedCtype ctype(ScopedCtype::Kind::Posix);  // names come out as the tar's bytes
    LayerTarStream stream(compressed_fd, compression);
    Extractor extractor(dest_dirfd, options, stats);
    for (;;) {
        archive_entry* entry = nullptr;
        int r = archive_read_next_header(stream.tar(), &entry);
        if (r == ARCHIVE_EOF) break;
        stream.rethrow_read_error();
        if (r < ARCHIVE_WARN) throw Error("read layer tar: " + archive_message(stream.tar()));
        extractor.entry(stream.tar(), entry);
        stream.rethrow_read_error();
    }
    extractor.finish();
    stats.diff_id = stream.finish();
    stats.uncompressed_bytes = stream.bytes();
    return stats;
}

std::string summary_note(const ExtractStats& s) {
    std::vector<std::string> parts;
    if (s.skipped_devices)
        parts.push_back("skipped " + std::to_string(s.skipped_devices) + " device node(s) (not permitted without root)");
    if (s.skipped_xattrs) parts.push_back("skipped " + std::to_string(s.skipped_xattrs) + " xattr(s)");
    if (s.unmapped_owners)
        parts.push_back(std::to_string(s.unmapped_owners) + " owner(s) not mapped in this user namespace were not kept");
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p;
    return out;
}

void remove_tree_at(int dirfd, const std::string& name) {
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) return;
        throw_errno("stat", name);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) throw_errno("remove", name);
        return;
    }
    int raw = ::openat(dirfd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (raw < 0) throw_errno("open", name);
    UniqueFd opath(raw);
    // A 0000 or read-only directory must be made readable and writable to empty it.
    if ((st.st_mode & 0700) != 0700) chmod_opath(opath.get(), 0700, name);
    raw = ::openat(opath.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (raw < 0) throw_errno("open", name);
    UniqueFd dir(raw);
    with_context(name, [&] { remove_children(dir.get(), name); });
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) throw_errno("remove", name);
}

}  // namespace aishell::oci
