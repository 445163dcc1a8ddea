// COPY/ADD file operations (see build_copy.hpp).
#include "composer/build_copy.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/path_components.hpp"
#include "common/resolve_path.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_add_tar.hpp"
#include "oci/json_parse.hpp"
#include "oci/json_text.hpp"

namespace aishell::composer {

std::vector<std::string> split_path(const std::string& rel) {
    std::vector<std::string> parts;
    for (std::string_view component : PathComponents(rel)) parts.emplace_back(component);
    return parts;
}

namespace {

namespace fs = std::filesystem;

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[\\") != std::string::npos; }

std::string join_rel(const std::string& a, const std::string& b) { return a == "." || a.empty() ? b : a + "/" + b; }

std::vector<std::string> list_dir(int dirfd, const std::string& rel) {
    std::vector<std::string> names;
    int fd = ::openat(dirfd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return names;
    DIR* d = ::fdopendir(fd);
    if (!d) {
        ::close(fd);
        return names;
    }
    std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
    while (auto* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(std::move(n));
    }
    std::sort(names.begin(), names.end());
    return names;
}

// Beneath root as a chroot would resolve it: symlinks (absolute ones too) and ".." stay inside.
UniqueFd open_in_root(int root_fd, const std::string& rel, int flags) {
    return open_resolved(root_fd, rel, flags, Resolve::InRoot);
}

bool excluded(const IgnoreMatcher* matcher, const std::string& rel) {
    return matcher && rel != "." && matcher->excluded(rel);
}

// Whether the directory dir_fd (rel in the context) holds an entry that .dockerignore lets
// through. BuildKit's context transfer (fsutil's filterFS.Walk) sends an excluded directory
// only as the parent of such an entry: without one it is not in the context at all.
bool holds_included(int dir_fd, const std::string& rel, const IgnoreMatcher& matcher) {
    for (const auto& name : list_dir(dir_fd, ".")) {
        const std::string child = join_rel(rel, name);
        if (!matcher.excluded(child)) return true;
        struct stat st {};
        if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) continue;
        UniqueFd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub && holds_included(sub.get(), child, matcher)) return true;
    }
    return false;
}

// Whether the entry name of dirfd (rel in the context; st: its lstat) is in the context the
// builder sees: not excluded, or an excluded directory holding an exception.
bool in_context(const IgnoreMatcher* matcher, int dirfd, const std::string& name, const std::string& rel,
                const struct stat& st) {
    if (!excluded(matcher, rel)) return true;
    if (!S_ISDIR(st.st_mode) || !matcher->has_exceptions()) return false;
    UniqueFd d(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    return d && holds_included(d.get(), rel, *matcher);
}

void check(bool ok, std::string_view op, const std::string& path) {
    if (!ok) throw_errno(op, path);
}

// lchown, leaving the owner as it is when the id has no mapping in this namespace (EINVAL);
// the recorder, when there is one, remembers what was wanted.
void chown_or_record(const std::string& path, CopyOwner o, OwnerRecorder* owners) {
    if (::lchown(path.c_str(), o.uid, o.gid) != 0 && errno != EINVAL) throw_errno("lchown", path);
    if (owners) owners->owner_attempted(path, o);
}

struct Copier {
    const CopyRequest& req;
    const IgnoreMatcher* matcher;
    OwnerRecorder* owners = nullptr;
    const oci::LayeredOwners* source_owners = nullptr;
    std::map<std::pair<dev_t, ino_t>, std::string> links;  // hardlinks within this copy

    // rel: the entry's path in the source root. A source stage's owners are what its layers
    // recorded where the disk could not keep them (single mode), else what the disk says.
    CopyOwner owner_for(const struct stat& st, const std::string& rel) const {
        if (req.chown) return *req.chown;
        if (!req.preserve_owner) return {};
        if (source_owners)
            if (auto o = source_owners->owner_of(rel)) return {o->uid, o->gid};
        return {st.st_uid, st.st_gid};
    }

    // chown clears set-id bits, so the mode comes after it. EINVAL: the id is not mapped in
    // this namespace (single mode); the file keeps root on disk and the recorder the owner.
    void set_owner_mode(const std::string& path, const struct stat& st, CopyOwner o, bool is_dir) const {
        chown_or_record(path, o, owners);
        if (S_ISLNK(st.st_mode)) return;
        mode_t mode = req.chmod ? *req.chmod : (st.st_mode & 07777);
        (void)is_dir;
        check(::chmod(path.c_str(), mode) == 0, "chmod", path);
    }

    static void set_mtime(const std::string& path, const struct stat& st) {
        timespec ts[2] = {st.st_atim, st.st_mtim};
        (void)::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }

    // Removes what stands at path unless it is a directory and a directory comes.
    void clear_target(const std::string& path, bool want_dir) const {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) return;
        if (S_ISDIR(st.st_mode)) {
            if (want_dir) return;
            if (owners) owners->removed(path);
            std::error_code ec;
            fs::remove_all(path, ec);
            if (ec) throw Error("replace directory " + path + ": " + ec.message());
            return;
        }
        if (owners) owners->removed(path);
        check(::unlink(path.c_str()) == 0, "unlink", path);
    }

    // mkdir -p: missing parents get 0755 and the --chown owner (as BuildKit's MkdirAll).
    void make_parents(const std::string& path) const {
        std::string cur;
        auto parts = split_path(path);
        for (const auto& p : parts) {
            cur += "/" + p;
            struct stat st {};
            if (::stat(cur.c_str(), &st) == 0) {
                if (!S_ISDIR(st.st_mode)) throw Error(req.instruction + ": " + cur + " is not a directory");
                continue;
            }
            check(::mkdir(cur.c_str(), 0755) == 0, "mkdir", cur);
            chown_or_record(cur, req.chown ? *req.chown : CopyOwner{}, owners);
        }
    }

    void copy_regular(int src_fd, const struct stat& st, const std::string& rel, const std::string& dst) {
        if (st.st_nlink > 1) {
            auto it = links.find({st.st_dev, st.st_ino});
            if (it != links.end()) {
                clear_target(dst, false);
                check(::link(it->second.c_str(), dst.c_str()) == 0, "link", dst);
                // The inode's owner was set (or recorded) with its first name; this name is
                // recorded as well, so either one keeps it in the layer.
                if (owners) owners->owner_attempted(dst, owner_for(st, rel));
                return;
            }
            links[{st.st_dev, st.st_ino}] = dst;
        }
        clear_target(dst, false);
        UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        check(static_cast<bool>(out), "create", dst);
        char buf[1 << 16];
        for (;;) {
            ssize_t n = ::read(src_fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            check(n >= 0, "read", dst);
            if (n == 0) break;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = ::write(out.get(), buf + off, static_cast<std::size_t>(n - off));
                if (w < 0 && errno == EINTR) continue;
                check(w > 0, "write", dst);
                off += w;
            }
        }
        set_owner_mode(dst, st, owner_for(st, rel), false);
        set_mtime(dst, st);
    }

    // One entry named name in dirfd (never followed), copied to dst.
    void copy_entry(int dirfd, const std::string& name, const std::string& rel, const std::string& dst) {
        struct stat st {};
        check(::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0, "stat", rel);
        if (!in_context(matcher, dirfd, name, rel, st)) return;
        if (S_ISDIR(st.st_mode)) {
            UniqueFd d(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            check(static_cast<bool>(d), "open", rel);
            copy_dir(d.get(), st, rel, dst, true);
        } else if (S_ISREG(st.st_mode)) {
            UniqueFd f(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            check(static_cast<bool>(f), "open", rel);
            copy_regular(f.get(), st, rel, dst);
        } else if (S_ISLNK(st.st_mode)) {
            std::string target(PATH_MAX, '\0');
            ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
            check(n >= 0, "readlink", rel);
            target.resize(static_cast<std::size_t>(n));
            clear_target(dst, false);
            check(::symlink(target.c_str(), dst.c_str()) == 0, "symlink", dst);
            set_owner_mode(dst, st, owner_for(st, rel), false);
            set_mtime(dst, st);
        } else {
            clear_target(dst, false);
            check(::mknod(dst.c_str(), st.st_mode, st.st_rdev) == 0, "mknod", dst);
            set_owner_mode(dst, st, owner_for(st, rel), false);
            set_mtime(dst, st);
        }
    }

    // The contents of dir_fd into dst, as BuildKit's fsutil copy does (CopyDirContents): the
    // destination itself, when missing, is made as its parents are (0755 or --chmod, the
    // --chown owner or root), never with the source directory's mode or owner; a nested
    // directory takes the source's metadata, also when it exists. Only the destination itself
    // is reached through a symlink; a nested one is refused where a non-directory stands, as
    // fsutil's copyDirectoryOnly refuses it ("cannot copy to non-directory"), where Docker's
    // classic builder replaced it (moby/moby#41035).
    void copy_dir(int dir_fd, const struct stat& st, const std::string& rel, const std::string& dst, bool nested) {
        struct stat existing {};
        bool exists = (nested ? ::lstat(dst.c_str(), &existing) : ::stat(dst.c_str(), &existing)) == 0;
        if (exists && !S_ISDIR(existing.st_mode)) {
            if (nested)
                throw Error(req.instruction + ": cannot copy to non-directory: " + dst,
                            "the image has a " + std::string(S_ISLNK(existing.st_mode) ? "symlink" : "file") +
                                " where the source has a directory (BuildKit refuses it too); copy to the "
                                "real path instead");
            clear_target(dst, true);
            exists = false;
        }
        if (!exists) check(::mkdir(dst.c_str(), 0700) == 0, "mkdir", dst);
        for (const auto& name : list_dir(dir_fd, "."))
            copy_entry(dir_fd, name, join_rel(rel, name), (dst == "/" ? "" : dst) + "/" + name);
        if (nested) {
            set_owner_mode(dst, st, owner_for(st, rel), true);
            set_mtime(dst, st);
        } else if (!exists) {
            chown_or_record(dst, req.chown ? *req.chown : CopyOwner{}, owners);
            check(::chmod(dst.c_str(), req.chmod ? *req.chmod : 0755) == 0, "chmod", dst);
            set_mtime(dst, st);
        }
    }
};

bool is_heredoc_source(const CopyRequest& req, const std::string& s, std::string* name) {
    if (s.rfind("<<", 0) != 0) return false;
    std::string n = s.substr(2);
    if (!n.empty() && n[0] == '-') n = n.substr(1);
    if (n.size() >= 2 && (n.front() == '\'' || n.front() == '"')) n = n.substr(1, n.size() - 2);
    if (!req.heredocs.count(n)) return false;
    *name = n;
    return true;
}

// Sources in order: context-relative paths, or heredocs.
struct Source {
    std::string rel;      // what is read: the path the source names, its symlinks followed
    std::string heredoc;  // name when it is one
    std::string name;     // the path as the source names it (a "dest/" target takes its base name)
};

std::vector<Source> resolve_sources(int root_fd, const CopyRequest& req, const IgnoreMatcher* matcher) {
    std::vector<Source> out;
    for (const auto& s : req.sources) {
        std::string name;
        if (is_heredoc_source(req, s, &name)) {
            out.push_back({"", name});
            continue;
        }
        for (auto& rel : expand_source(root_fd, s, matcher, req.instruction)) {
            auto real = resolve_source(root_fd, rel, matcher);
            if (!real) throw Error(req.instruction + " failed: " + rel + " changed while the build read the context");
            out.push_back({*real, "", rel});
        }
    }
    return out;
}

bool dest_is_dir_syntax(const std::string& dest) {
    return !dest.empty() && (dest.back() == '/' || dest.ends_with("/.") || dest == ".");
}

std::string base_name(const std::string& rel) {
    auto slash = rel.rfind('/');
    return slash == std::string::npos ? rel : rel.substr(slash + 1);
}

}  // namespace

OwnerRecorder::OwnerRecorder(const std::string& root, int tree_fd) : tree_fd_(tree_fd) {
    std::error_code ec;
    root_ = fs::canonical(root, ec).string();
    if (ec) throw Error("resolve " + root + ": " + ec.message());
}

// path cleaned, its parent resolved (symlinks followed, as the copy's own calls did), relative
// to root; nullopt for root itself or what is outside it.
std::optional<std::string> OwnerRecorder::layer_path(const std::string& path) {
    std::string clean = fs::path(path).lexically_normal().string();
    while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
    auto slash = clean.rfind('/');
    if (slash == std::string::npos) return std::nullopt;  // the copy names absolute paths
    std::string parent = slash == 0 ? "/" : clean.substr(0, slash);
    std::string name = clean.substr(slash + 1);
    if (name.empty() || name == "." || name == "..") return std::nullopt;
    if (parent != cached_parent_ || cached_parent_.empty()) {
        std::error_code ec;
        std::string real = fs::canonical(parent, ec).string();
        if (ec) throw Error("resolve " + parent + ": " + ec.message());
        cached_parent_ = parent;
        if (real == root_) cached_parent_rel_ = "";
        else if (root_ == "/") cached_parent_rel_ = real.substr(1);
        else if (real.starts_with(root_ + "/")) cached_parent_rel_ = real.substr(root_.size() + 1);
        else cached_parent_rel_ = std::nullopt;
    }
    if (!cached_parent_rel_) return std::nullopt;
    return cached_parent_rel_->empty() ? name : *cached_parent_rel_ + "/" + name;
}

void OwnerRecorder::owner_attempted(const std::string& path, CopyOwner wanted) {
    auto rel = layer_path(path);
    if (!rel) return;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) throw_errno("stat", path);
    wanted_[*rel] = Wanted{wanted, st.st_uid == wanted.uid && st.st_gid == wanted.gid};
}

void OwnerRecorder::removed(const std::string& path) {
    auto rel = layer_path(path);
    cached_parent_.clear();  // a removed directory may be replaced by a symlink
    if (!rel) return;
    wanted_.erase(*rel);
    // Beneath rel: [rel + "/", rel + "0"), '0' being the byte after '/'.
    wanted_.erase(wanted_.lower_bound(*rel + "/"), wanted_.lower_bound(*rel + "0"));
}

namespace {

// Whether the entry rel of the upper dir tree_fd is one overlayfs merged with or copied up
// from the lower layers (a directory that is not opaque, a regular file with a copy-up origin):
// the layer writer would give it the lower layers' recorded owner.
bool from_lower_layers(int tree_fd, const std::string& rel, mode_t type) {
    if (type != S_IFDIR && type != S_IFREG) return false;
    UniqueFd fd(::openat(tree_fd, rel.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return false;
    auto has = [&](const char* name) { return ::fgetxattr(fd.get(), name, nullptr, 0) >= 0; };
    if (type == S_IFREG) return has("user.overlay.origin") || has("trusted.overlay.origin");
    char v[2] = {};
    for (const char* name : {"user.overlay.opaque", "trusted.overlay.opaque"})
        if (::fgetxattr(fd.get(), name, v, sizeof v) == 1 && v[0] == 'y') return false;
    return true;
}

}  // namespace

oci::OwnerTable OwnerRecorder::finish() const {
    oci::OwnerTable table;
    for (const auto& [rel, w] : wanted_) {
        auto id = oci::entry_identity_at(tree_fd_, rel);
        if (!id) continue;  // not in the layer's tree
        if (w.on_disk && !from_lower_layers(tree_fd_, rel, id->type)) continue;
        table.set(rel, oci::OwnerRecord::for_entry({w.owner.uid, w.owner.gid}, *id));
    }
    return table;
}

std::string resolve_in_root(const std::string& root, const std::string& path) {
    UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) throw_errno("open", root);
    char resolved[PATH_MAX];
    if (!resolve_in_root_path(root_fd.get(), path.c_str(), resolved, sizeof resolved)) {
        if (errno == ELOOP) throw Error("resolve " + path + " in " + root + ": too many levels of symbolic links");
        throw_errno("resolve " + path + " in", root);
    }
    const std::string base = root == "/" ? "" : root;
    if (!resolved[0]) return base.empty() ? "/" : base;
    return base + "/" + resolved;
}

std::string clean_source_path(const std::string& path) {
    std::string p = fs::path("/" + path).lexically_normal().string();
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p == "/" ? "." : p.substr(1);
}

namespace {

// The components of a cleaned pattern before its first wildcard name a directory beneath root.
bool wildcard_base_exists(int root_fd, const std::string& clean) {
    std::string base = ".";
    for (const auto& comp : split_path(clean)) {
        if (has_wildcard(comp)) break;
        base = join_rel(base, comp);
    }
    return static_cast<bool>(open_in_root(root_fd, base, O_PATH | O_DIRECTORY));
}

}  // namespace

std::optional<std::string> resolve_source(int root_fd, const std::string& rel, const IgnoreMatcher* matcher) {
    // RESOLVE_IN_ROOT by hand, so that each symlink on the way is seen: a link is in the
    // context BuildKit's builder sees only when its own path is not excluded, and the path it
    // leads to only when that is not excluded either (fsutil never sends an ignored file; the
    // parents of a sent entry are sent even when excluded, so directories passed through are
    // not checked). 40 links at most, as path_resolution(7).
    std::vector<std::string> done;
    std::vector<std::string> todo = split_path(rel);
    std::reverse(todo.begin(), todo.end());  // a stack: the next component is at the back
    int links = 0;
    auto joined = [&] {
        std::string path;
        for (const auto& c : done) path = join_rel(path, c);
        return path.empty() ? std::string(".") : path;
    };
    while (!todo.empty()) {
        std::string comp = std::move(todo.back());
        todo.pop_back();
        if (comp == ".") continue;
        if (comp == "..") {
            if (!done.empty()) done.pop_back();
            continue;
        }
        done.push_back(comp);
        std::string path = joined();
        struct stat st {};
        if (::fstatat(root_fd, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return std::nullopt;
        if (!S_ISLNK(st.st_mode)) continue;
        if (excluded(matcher, path) || ++links > 40) return std::nullopt;
        std::string target(PATH_MAX, '\0');
        ssize_t n = ::readlinkat(root_fd, path.c_str(), target.data(), target.size());
        if (n < 0) return std::nullopt;
        target.resize(static_cast<std::size_t>(n));
        done.pop_back();
        if (target.starts_with("/")) done.clear();
        auto parts = split_path(target);
        todo.insert(todo.end(), parts.rbegin(), parts.rend());
    }
    std::string path = joined();
    struct stat st {};
    if (path != "." && ::fstatat(root_fd, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return std::nullopt;
    if (path != "." && !in_context(matcher, root_fd, path, path, st)) return std::nullopt;
    return path;
}

std::vector<std::string> expand_source(int root_fd, const std::string& pattern, const IgnoreMatcher* matcher,
                                       const std::string& instruction) {
    std::string clean = clean_source_path(pattern);
    std::vector<std::string> matches{"."};
    if (clean != ".") {
        for (const auto& comp : split_path(clean)) {
            std::vector<std::string> next;
            for (const auto& base : matches) {
                if (!has_wildcard(comp)) {
                    next.push_back(join_rel(base, comp));
                    continue;
                }
                for (const auto& name : list_dir(root_fd, base))
                    if (::fnmatch(comp.c_str(), name.c_str(), 0) == 0) next.push_back(join_rel(base, name));
            }
            matches = std::move(next);
        }
    }
    std::vector<std::string> found;
    for (const auto& m : matches)
        if (resolve_source(root_fd, m, matcher)) found.push_back(m);
    // A wildcard that matches nothing copies nothing, as BuildKit's COPY/ADD (AllowEmptyWildcard;
    // Docker's classic builder fails only when no source at all matched), provided the
    // directory it searches exists (fsutil's ResolveWildcards walks it).
    if (found.empty() && has_wildcard(clean) && wildcard_base_exists(root_fd, clean)) return {};
    if (found.empty())
        throw Error(instruction + " failed: file not found in build context or excluded by .dockerignore: " + pattern,
                    "the path is relative to the build context (or the --from stage's root)");
    std::sort(found.begin(), found.end());
    return found;
}

mode_t parse_chmod(const std::string& text, const std::string& instruction) {
    if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos)
        throw Error(instruction + " --chmod=" + text + ": not an octal mode", "write e.g. --chmod=0755");
    return static_cast<mode_t>(std::stoul(text, nullptr, 8));
}

namespace {

// A COPY heredoc source: a new 0644 file named after its delimiter when dest is a directory,
// its content written as it was expanded, owner and mode as any copied file's.
void copy_heredoc(Copier& copier, const std::string& name, const std::string& dest, bool dest_dir) {
    struct stat st {};
    st.st_mode = S_IFREG | 0644;
    st.st_nlink = 1;
    ::clock_gettime(CLOCK_REALTIME, &st.st_mtim);
    st.st_atim = st.st_mtim;
    struct stat dst_st {};
    std::string target = dest_dir || (::stat(dest.c_str(), &dst_st) == 0 && S_ISDIR(dst_st.st_mode)) ? dest + "/" + name : dest;
    copier.make_parents(fs::path(target).parent_path().string());
    copier.clear_target(target, false);
    const std::string& content = copier.req.heredocs.at(name);
    UniqueFd out(::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    check(static_cast<bool>(out), "create", target);
    check(::write(out.get(), content.data(), content.size()) == static_cast<ssize_t>(content.size()), "write", target);
    copier.set_owner_mode(target, st, copier.owner_for(st, ""), false);
}

}  // namespace

void copy_files(int src_root_fd, const std::string& dest_root, const CopyRequest& req, const IgnoreMatcher* matcher,
                OwnerRecorder* owners, const oci::LayeredOwners* source_owners) {
    auto sources = resolve_sources(src_root_fd, req, matcher);
    bool dest_dir = dest_is_dir_syntax(req.dest);
    if (sources.size() > 1 && !dest_dir)
        throw Error(req.instruction + " with more than one source file: the destination " + req.dest +
                        " must be a directory and end with a /");
    // Symlinks on the way, the last component too, resolve inside the target root (BuildKit:
    // fs.RootPath in fsutil's Copy and in its unpack), so a dangling link is followed to where
    // it points instead of standing in the way of a mkdir.
    const std::string dest = resolve_in_root(dest_root, req.dest);
    Copier copier{req, matcher, owners, source_owners, {}};
    for (const auto& src : sources) {
        // Hard links are kept within one source, not between two (BuildKit copies each source
        // on its own, fsutil's copier tracking inodes per copy; Docker 20.10 the same).
        copier.links.clear();
        if (!src.heredoc.empty()) {
            copy_heredoc(copier, src.heredoc, dest, dest_dir);
            continue;
        }
        UniqueFd path_fd = open_in_root(src_root_fd, src.rel, O_PATH);
        struct stat st {};
        check(path_fd && ::fstat(path_fd.get(), &st) == 0, "stat", src.rel);
        if (S_ISDIR(st.st_mode)) {
            UniqueFd d = open_in_root(src_root_fd, src.rel, O_RDONLY | O_DIRECTORY);
            check(static_cast<bool>(d), "open", src.rel);
            copier.make_parents(fs::path(dest).parent_path().string());
            copier.copy_dir(d.get(), st, src.rel, dest, false);
            continue;
        }
        UniqueFd f = open_in_root(src_root_fd, src.rel, O_RDONLY);
        check(static_cast<bool>(f), "open", src.rel);
        if (req.extract_archives && S_ISREG(st.st_mode) && is_tar_archive(f.get(), src.rel)) {
            copier.make_parents(dest);
            extract_tar(f.get(), dest, src.rel, req.chown, owners);  // dest resolved above, links beneath it
            continue;
        }
        struct stat dst_st {};
        bool into_dir = dest_dir || (::stat(dest.c_str(), &dst_st) == 0 && S_ISDIR(dst_st.st_mode));
        std::string target = into_dir ? dest + "/" + base_name(src.name) : dest;
        copier.make_parents(fs::path(target).parent_path().string());
        if (S_ISREG(st.st_mode)) {
            copier.copy_regular(f.get(), st, src.rel, target);
        } else {
            auto parent = fs::path(src.rel).parent_path().string();
            UniqueFd pd = open_in_root(src_root_fd, parent.empty() ? "." : parent, O_RDONLY | O_DIRECTORY);
            check(static_cast<bool>(pd), "open", parent);
            copier.copy_entry(pd.get(), base_name(src.rel), src.rel, target);
        }
    }
}

namespace {

void hash_str(oci::Sha256& h, std::string_view s) {
    std::uint64_t n = s.size();
    h.update(&n, sizeof n);
    h.update(s);
}

oci::Digest content_digest(int fd, const std::string& rel) {
    oci::Sha256 h;
    char buf[1 << 16];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) h.update(buf, static_cast<std::size_t>(n));
    if (n < 0) throw_errno("read", rel);
    return h.finish();
}

// A file's content enters the key as its own sha256, so a memo hit and a fresh read agree.
void hash_file(oci::Sha256& h, const struct stat& st, const std::string& rel, ContextDigestMemo* memo,
               const std::function<UniqueFd()>& open_for_read) {
    if (memo) {
        hash_str(h, memo->file_digest(st, rel, open_for_read).str());
        return;
    }
    UniqueFd f = open_for_read();
    hash_str(h, content_digest(f.get(), rel).str());
}

void hash_entry(oci::Sha256& h, int dirfd, const std::string& name, const std::string& rel,
                const IgnoreMatcher* matcher, bool follow, ContextDigestMemo* memo) {
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, follow ? 0 : AT_SYMLINK_NOFOLLOW) != 0) throw_errno("stat", rel);
    if (!in_context(matcher, dirfd, name, rel, st)) return;
    hash_str(h, rel);
    std::uint32_t mode = st.st_mode;
    h.update(&mode, sizeof mode);
    if (S_ISREG(st.st_mode)) {
        hash_file(h, st, rel, memo, [&] {
            UniqueFd f(::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW)));
            if (!f) throw_errno("open", rel);
            return f;
        });
    } else if (S_ISLNK(st.st_mode)) {
        std::string target(PATH_MAX, '\0');
        ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
        if (n < 0) throw_errno("readlink", rel);
        target.resize(static_cast<std::size_t>(n));
        hash_str(h, target);
    } else if (S_ISDIR(st.st_mode)) {
        UniqueFd d(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW)));
        if (!d) throw_errno("open", rel);
        for (const auto& child : list_dir(d.get(), "."))
            hash_entry(h, d.get(), child, join_rel(rel, child), matcher, false, memo);
    }
}

}  // namespace

ContextDigestMemo::ContextDigestMemo(fs::path store_cache_dir, std::string context, std::chrono::nanoseconds settle)
    : file_(store_cache_dir / "context" / "digests.json"), context_(std::move(context)) {
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);
    settled_before_ns_ = ns_of(now) - static_cast<std::int64_t>(settle.count());
    auto text = read_file_if_exists(file_, 256u << 20);
    if (!text) return;
    nlohmann::json j = oci::parse_json(*text);
    if (!j.is_object() || j.value("version", 0) != 1 || !j.contains("entries") || !j["entries"].is_object()) return;
    for (const auto& [key, v] : j["entries"].items()) {
        if (!v.is_array() || v.size() != 6 || !v[5].is_string()) continue;
        try {
            entries_[key] = Entry{v[0].get<std::uint64_t>(), v[1].get<std::uint64_t>(), v[2].get<std::uint64_t>(),
                                  v[3].get<std::int64_t>(), v[4].get<std::int64_t>(), v[5].get<std::string>(), false};
        } catch (const nlohmann::json::exception&) {
            // a malformed entry is a miss
        }
    }
}

oci::Digest ContextDigestMemo::file_digest(const struct stat& st, const std::string& rel,
                                           const std::function<UniqueFd()>& open_for_read) {
    const std::string key = context_ + "/" + rel;
    const Entry now{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
                    static_cast<std::uint64_t>(st.st_size), ns_of(st.st_mtim), ns_of(st.st_ctim), {}, true};
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.dev == now.dev && it->second.ino == now.ino && it->second.size == now.size &&
        it->second.mtime_ns == now.mtime_ns && it->second.ctime_ns == now.ctime_ns) {
        if (auto d = oci::Digest::try_parse("sha256:" + it->second.digest)) {
            it->second.used = true;
            ++reused_;
            return *d;
        }
    }
    UniqueFd f = open_for_read();
    oci::Digest d = content_digest(f.get(), rel);
    ++hashed_;
    // Remembered only when the content read is the content of that identity: nothing changed
    // the file while it was read (fstat again) and its ctime had settled before hashing began.
    struct stat after {};
    if (::fstat(f.get(), &after) == 0 && after.st_ino == st.st_ino && after.st_size == st.st_size &&
        ns_of(after.st_mtim) == now.mtime_ns && ns_of(after.st_ctim) == now.ctime_ns &&
        now.ctime_ns < settled_before_ns_) {
        Entry e = now;
        e.digest = std::string(d.encoded());
        entries_[key] = std::move(e);
        changed_ = true;
    } else if (it != entries_.end()) {
        entries_.erase(it);
        changed_ = true;
    }
    return d;
}

void ContextDigestMemo::save() const {
    if (!changed_) return;
    // Bounded: past the limit only what this build used is kept.
    constexpr std::size_t kMaxEntries = 200000;
    nlohmann::json entries = nlohmann::json::object();
    for (const auto& [key, e] : entries_)
        if (entries_.size() <= kMaxEntries || e.used)
            entries[key] = {e.dev, e.ino, e.size, e.mtime_ns, e.ctime_ns, e.digest};
    try {
        make_dirs(file_.parent_path(), 0700);
        TempFile tmp(file_.parent_path(), ".digests.tmp", 0600);
        write_all(tmp.fd(), oci::json_document(nlohmann::json{{"version", 1}, {"entries", entries}}), tmp.path().string());
        tmp.replace(file_);
    } catch (const std::exception&) {
        // a cache: the next build hashes again
    }
}

oci::Digest source_digest(int src_root_fd, const CopyRequest& req, const IgnoreMatcher* matcher,
                          ContextDigestMemo* memo) {
    oci::Sha256 h;
    for (const auto& src : resolve_sources(src_root_fd, req, matcher)) {
        if (!src.heredoc.empty()) {
            hash_str(h, "<<" + src.heredoc);
            hash_str(h, req.heredocs.at(src.heredoc));
            continue;
        }
        // Resolved beneath the root (a top-level symlink is followed, as COPY does).
        UniqueFd fd = open_in_root(src_root_fd, src.rel, O_PATH);
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0) throw_errno("open", src.rel);
        hash_str(h, src.name);
        if (src.rel != src.name) hash_str(h, "-> " + src.rel);
        std::uint32_t mode = st.st_mode;
        h.update(&mode, sizeof mode);
        if (S_ISDIR(st.st_mode)) {
            UniqueFd d = open_in_root(src_root_fd, src.rel, O_RDONLY | O_DIRECTORY);
            if (!d) throw_errno("open", src.rel);
            for (const auto& child : list_dir(d.get(), "."))
                hash_entry(h, d.get(), child, join_rel(src.rel, child), matcher, false, memo);
        } else if (S_ISREG(st.st_mode)) {
            hash_file(h, st, src.rel, memo, [&] {
                UniqueFd f = open_in_root(src_root_fd, src.rel, O_RDONLY);
                if (!f) throw_errno("open", src.rel);
                return f;
            });
        }
    }
    return h.finish();
}

}  // namespace aishell::composer
