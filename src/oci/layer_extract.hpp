// Layer extraction: one streaming pass over a (gzip, zstd or plain) layer tar that decompresses,
// hashes the uncompressed bytes (the layer's diff_id) and writes the entries beneath a directory
// fd in overlayfs format:
//   .wh.NAME        -> a 0/0 character device NAME
//   .wh..wh..opq    -> xattr user.overlay.opaque=y on its directory (overlayfs mounted with userxattr)
//   .wh..wh.*       -> other aufs metadata, ignored (as Docker does)
//
// Security (the archive is untrusted): nothing outside dest_dirfd is created or changed.
//   - Entry names are cleaned lexically: a leading "/" is dropped (Docker treats it as relative),
//     "." and empty components vanish, ".." that would climb above the root is an error.
//   - Each entry's parent directory is resolved beneath dest_dirfd with openat2(RESOLVE_BENEATH |
//     RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), or, where openat2 returns ENOSYS (kernels
//     before 5.6, or a seccomp filter), by an O_NOFOLLOW walk one component at a time. A symlink
//     among an entry's parents is an error (umoci CVE-2021-29136): a layer tar never needs one.
//   - The entry itself is then made with an *at call on one name in that parent, never following
//     a symlink: O_CREAT|O_EXCL|O_NOFOLLOW, mknodat, symlinkat, linkat without AT_SYMLINK_FOLLOW,
//     fchownat/utimensat with AT_SYMLINK_NOFOLLOW, chmod/chown/xattrs through the fd we created.
//     An existing entry of another type (or any non-directory) is removed first, so a symlink
//     planted earlier in the tar is replaced, not written through (containerd CVE-2021-32760).
//   - Hardlink targets are cleaned the same way and must already exist inside the layer.
//   - Symlink targets are stored as they are: an absolute target (/bin -> /usr/bin) is resolved
//     against the container root at run time, which is legitimate.
//
// Metadata: owners (lchown; see Owners), modes including setuid/setgid (chmod after chown, which
// clears them), mtimes, xattrs user.* and security.capability (set after chown, which clears file
// capabilities). Directories are created owner-writable (0700) and get their real mode, owner,
// xattrs and mtime only at the end, deepest first: a 0000 or 0555 directory (umoci#310) does not
// stop its own contents from being written, and its mtime is not bumped by its children.
// Other layers are separate directories, so they are never affected.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "oci/digest.hpp"
#include "oci/media_types.hpp"
#include "oci/owner_table.hpp"

namespace aishell::oci {

struct ExtractOptions {
    // What to do with the tar's uid/gid.
    enum class Owners {
        // lchown to the tar's ids; any failure is an error (real root, or subuid mode).
        Preserve,
        // lchown; an id not mapped in this user namespace (EINVAL: single mode maps only 0) is
        // left as the extracting user's and counted in ExtractStats::unmapped_owners.
        PreserveMapped,
        // No chown at all (an unprivileged user outside any user namespace).
        Ignore,
    };
    Owners owners = Owners::PreserveMapped;
    // Skip character and block devices without trying mknod (counted in skipped_devices).
    // When false, mknod is tried and EPERM (as in any user namespace) is skipped and counted too.
    bool rootless = false;
    // Never call openat2: always use the O_NOFOLLOW walk. For tests of the fallback; the fallback
    // is chosen automatically when openat2 returns ENOSYS.
    bool force_walk = false;
    // Receives one line per layer summarising what was skipped (see summary_note). When empty,
    // ensure_layer_unpacked writes "aishell: note: ..." to stderr. extract_layer never calls it.
    std::function<void(const std::string&)> note;
};

struct ExtractStats {
    Digest diff_id;                     // sha256 of the uncompressed tar stream, all of it
    std::uint64_t uncompressed_bytes = 0;
    std::uint64_t files = 0;            // regular files
    std::uint64_t dirs = 0;
    std::uint64_t symlinks = 0;
    std::uint64_t hardlinks = 0;
    std::uint64_t whiteouts = 0;        // 0/0 char devices made from .wh.NAME
    std::uint64_t opaque_dirs = 0;
    std::uint64_t fifos = 0;
    std::uint64_t devices = 0;          // char/block devices created
    std::uint64_t skipped_devices = 0;  // rootless, or mknod refused with EPERM
    std::uint64_t skipped_xattrs = 0;   // namespace not kept, or the kernel refused (EPERM/ENOTSUP)
    std::uint64_t unmapped_owners = 0;  // Owners::PreserveMapped and lchown said EINVAL
    // The owners the tar gave that could not be set (single mode), by path: the tree's owner
    // table (layers/NAME.owners), so a later step that copies such an entry up writes it into
    // its layer with that owner instead of the extracting user's (root).
    OwnerTable unmapped_owner_records;
    bool used_walk_fallback = false;    // openat2 was unavailable (or force_walk)
};

// Reads the layer from compressed_fd (read to its end; not closed) and extracts it beneath
// dest_dirfd, which should be an empty directory the caller owns. Throws Error naming the entry
// ("layer entry 'a/../../etc': path escapes the layer root") on a malformed or hostile archive
// or a failing syscall; what was written so far stays (the caller removes dest). The diff_id is
// returned, not checked: the caller compares it with the image config's.
ExtractStats extract_layer(int compressed_fd, media_type::Compression compression, int dest_dirfd,
                           const ExtractOptions& options);

// "skipped 3 device nodes (not permitted without root), 2 xattrs, kept 5 owners unmapped";
// empty when nothing was skipped.
std::string summary_note(const ExtractStats& stats);

// Removes name (a file or a whole tree) beneath dirfd without following symlinks, making
// directories writable first (extracted trees may hold 0000 dirs). ENOENT is not an error.
void remove_tree_at(int dirfd, const std::string& name);

}  // namespace aishell::oci
