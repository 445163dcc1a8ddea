// COPY and ADD as file operations: the sources a pattern names (Go filepath.Match wildcards per
// path component, .dockerignore applied to context sources), the destination rules Docker
// uses (trailing slash, several sources, directory contents, an existing directory), owners
// (--chown, else 0:0 for the context, the source's owners for --from) and modes (--chmod),
// hardlinks kept within one copy, local tar archives extracted by ADD. The copy runs inside the
// build step's user namespace, chrooted into the step's overlay rootfs (so destination paths and
// symlinks resolve inside it); sources are read beneath a directory fd, never escaping it.
// source_digest() is the parent's view of the same sources, for the step cache key.
// Owners the copy cannot set on disk (single userns mode maps only container root) go to an
// OwnerRecorder, which gives the layer writer its intended-owner table (oci/owner_table.hpp).
#pragma once

#include <sys/types.h>

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"
#include "composer/dockerignore.hpp"
#include "oci/digest.hpp"
#include "oci/owner_table.hpp"

namespace aishell::composer {

struct CopyOwner {
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
};

struct CopyRequest {
    std::vector<std::string> sources;  // as written (expanded); "<<NAME" names a heredoc
    std::string dest;                  // absolute path in the target root; a trailing '/' kept
    std::optional<CopyOwner> chown;
    std::optional<mode_t> chmod;
    bool extract_archives = false;     // ADD: local tar archives (any compression) are extracted
    bool preserve_owner = false;       // COPY --from: keep the source's owners
    std::map<std::string, std::string> heredocs;  // heredoc name -> content
    std::string instruction = "COPY";  // for messages
};

// The owners a copy wants but cannot set on disk: lchown to an id the user namespace does not
// map fails with EINVAL (in single mode every id but 0). Paths, as the copy names them beneath
// root ("/" in the chrooted helper), are resolved -- a destination reached through a symlinked
// directory is recorded under its real path -- and made relative to root. finish() takes each
// entry's identity from tree_fd, the directory the layer is written from: the overlay's upper
// dir, not the overlay the copy works in (whose inode numbers differ for copied-up entries).
// An owner the disk does have is recorded too when the entry is merged with or copied up from
// the lower layers, so that their recorded owner (layer_write's lower_owners) does not win.
class OwnerRecorder {
public:
    OwnerRecorder(const std::string& root, int tree_fd);
    // After an lchown attempt on path: remembers wanted when the disk does not have it, else
    // forgets what an earlier attempt remembered.
    void owner_attempted(const std::string& path, CopyOwner wanted);
    // path and everything beneath it were removed (or are about to be replaced).
    void removed(const std::string& path);
    std::size_t size() const noexcept { return wanted_.size(); }  // what finish() looks at
    // The table of what is still in tree_fd, with each entry's identity; throws Error when it
    // passes the table's bounds.
    oci::OwnerTable finish() const;

private:
    std::optional<std::string> layer_path(const std::string& path);

    std::string root_;  // resolved
    int tree_fd_;
    struct Wanted {
        CopyOwner owner;
        bool on_disk = false;  // the lchown took
    };
    std::map<std::string, Wanted> wanted_;
    std::string cached_parent_;                      // the last parent resolved ...
    std::optional<std::string> cached_parent_rel_;  // ... relative to root (nullopt: outside)
};

// path (absolute, beneath root) with every symlink in it resolved as if root were "/", the way
// BuildKit resolves a COPY/ADD destination (continuity's fs.RootPath): absolute link targets
// start again at root, ".." stops at root, a dangling link leads to where it points (COPY f
// /link/sub/ with /link -> target writes /target/sub/f), and what does not exist is kept as
// written. Returns root joined with the resolved path, without a trailing '/' (root itself as
// given). Throws Error after 40 links (a loop; common/resolve_path.hpp does the walk).
std::string resolve_in_root(const std::string& root, const std::string& path);

// Cleans a source path as BuildKit does: relative to the source root, "." for the root itself.
std::string clean_source_path(const std::string& path);

// The context-relative path rel leads to beneath root_fd (as if it were "/"), its symlinks
// followed as BuildKit's COPY follows a source's; nullopt when it is missing or is not in the
// context the builder sees: it, or a symlink passed on the way, is excluded by matcher
// (BuildKit never sends an ignored file, so a link to one dangles in the builder).
std::optional<std::string> resolve_source(int root_fd, const std::string& rel, const IgnoreMatcher* matcher);

// The context-relative paths a source pattern matches beneath root_fd, sorted. Paths that do
// not resolve (resolve_source) do not match. A wildcard pattern may match nothing (BuildKit);
// otherwise throws Error naming the source when nothing matches.
std::vector<std::string> expand_source(int root_fd, const std::string& pattern, const IgnoreMatcher* matcher,
                                       const std::string& instruction);

// Performs the copy. dest_root is "/" in the chrooted helper (tests pass a temp dir). Owners
// that cannot be set are reported to owners when given. source_owners: the intended owners of
// a --from source's layers (what preserve_owner keeps where the disk could not).
void copy_files(int src_root_fd, const std::string& dest_root, const CopyRequest& request,
                const IgnoreMatcher* matcher, OwnerRecorder* owners = nullptr,
                const oci::LayeredOwners* source_owners = nullptr);

// A memo of context file content digests, one per store (<store>/cache/context/digests.json),
// as BuildKit's contenthash keeps one: a file's path (context dir + relative path) -> its stat
// identity (device, inode, size, mtime and ctime in ns) and the sha256 of its content. The stat
// data only decides whether the content must be read again, never what it is: a file whose
// identity is unchanged has the content it had when hashed, because any write changes its
// ctime, which no user can set back. A file changed in the same clock tick as it was hashed
// could keep its ctime, so entries are only remembered for files whose ctime was over two
// seconds old when hashing started (younger ones are hashed every time until they settle).
// The file is a cache: written by rename without fsync, read back as empty when unreadable.
class ContextDigestMemo {
public:
    // Loads the memo of store_cache_dir for the context dir context (an absolute path). settle:
    // how old a file's ctime must be to be remembered (tests shorten it).
    ContextDigestMemo(std::filesystem::path store_cache_dir, std::string context,
                      std::chrono::nanoseconds settle = std::chrono::seconds(2));
    // sha256 of the content of the regular file rel (its path in the context; st: its stat):
    // remembered when st matches, else read through open_for_read (and remembered when settled).
    oci::Digest file_digest(const struct stat& st, const std::string& rel, const std::function<UniqueFd()>& open_for_read);
    // Writes the memo back when it changed (a failed build does not call it: the store stays
    // as it was). Errors are ignored: the next build hashes again.
    void save() const;
    std::size_t hashed() const noexcept { return hashed_; }        // files read in this build
    std::size_t remembered() const noexcept { return reused_; }    // files not read

private:
    struct Entry {
        std::uint64_t dev = 0, ino = 0, size = 0;
        std::int64_t mtime_ns = 0, ctime_ns = 0;
        std::string digest;  // hex
        bool used = false;   // looked up in this build (kept first when the memo is trimmed)
    };
    std::filesystem::path file_;
    std::string context_;
    std::int64_t settled_before_ns_;  // ctime older than this: remembered
    std::map<std::string, Entry> entries_;
    bool changed_ = false;
    std::size_t hashed_ = 0, reused_ = 0;
};

// sha256 over everything the sources name (paths, types, modes, link targets, the sha256 of
// each file's content): the part of a COPY step's cache key that the context decides. Owners
// and mtimes of context files do not count (COPY does not keep them). With memo, unchanged
// files are not read again.
oci::Digest source_digest(int src_root_fd, const CopyRequest& request, const IgnoreMatcher* matcher,
                          ContextDigestMemo* memo = nullptr);

// Parses --chmod (octal only, as BuildKit before 1.14's symbolic modes); throws Error.
mode_t parse_chmod(const std::string& text, const std::string& instruction);

}  // namespace aishell::composer
