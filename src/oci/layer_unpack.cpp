// ensure_layer_unpacked / unpack_layer_stream (see layer_unpack.hpp): extract into tmp/, verify
// the diff_id, sync, rename into layers/<hex>.
#include "oci/layer_unpack.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "oci/lease.hpp"
#include "oci/owner_table.hpp"

namespace aishell::oci {

namespace {

UniqueFd open_dir_fd(const fs::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw_errno("open", dir.string());
    return UniqueFd(fd);
}

// Marks dir with the ext2/3/4 "top of directory hierarchies" hint (chattr +T): ext4's Orlov
// allocator then places each directory made in it (a temp layer tree, whose random name picks
// where the search starts) in a flex group with few directories, as it does for directories in
// /, instead of in the parent's flex group; the tree's contents follow their directories. Why:
// on ext4 without a journal, every inode allocation first skips the group's free inodes that
// were deleted in the last 60-300 s (ialloc.c find_inode_bit -> recently_deleted), one by one.
// The store's tmp/ sits beside everything else that is made and removed under the same parent
// (test and build trees in /tmp): with thousands of such inodes, allocation dominated the unpack
// (1.4 s of system time instead of 0.2 s for the Debian image). The flag is not inherited, is
// only a placement hint, and other filesystems refuse it (ignored, as is any error).
void hint_top_directory(int dir) noexcept {
    int flags = 0;
    if (::ioctl(dir, FS_IOC_GETFLAGS, &flags) != 0 || (flags & FS_TOPDIR_FL)) return;
    flags |= FS_TOPDIR_FL;
    (void)::ioctl(dir, FS_IOC_SETFLAGS, &flags);
}

// tmp/unpack-<random>/: removed (even when it holds 0000 dirs) unless renamed into place.
class TempTree {
public:
    explicit TempTree(const fs::path& tmp_dir) : parent_(open_dir_fd(tmp_dir)), tmp_dir_(tmp_dir) {
        hint_top_directory(parent_.get());
        for (int attempt = 0;; ++attempt) {
            name_ = "unpack-" + random_hex(16);
            if (::mkdirat(parent_.get(), name_.c_str(), 0700) == 0) break;
            if (errno != EEXIST || attempt > 8) throw_errno("mkdir", (tmp_dir / name_).string());
        }
        int fd = ::openat(parent_.get(), name_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) throw_errno("open", (tmp_dir / name_).string());
        dir_.reset(fd);
    }
    TempTree(const TempTree&) = delete;
    TempTree& operator=(const TempTree&) = delete;
    ~TempTree() {
        if (name_.empty()) return;
        dir_.reset();
        try {
            remove_tree_at(parent_.get(), name_);
        } catch (const Error& e) {
            std::cerr << "aishell: warning: remove " << (tmp_dir_ / name_).string() << ": " << e.message() << "\n";
        }
    }

    int fd() const noexcept { return dir_.get(); }

    // Renames the tree to target. False when target already exists (another process won the
    // race); the temp tree is then removed by the destructor.
    bool install(const fs::path& target) {
        if (::syncfs(dir_.get()) != 0) throw_errno("syncfs", (tmp_dir_ / name_).string());
        if (::renameat(parent_.get(), name_.c_str(), AT_FDCWD, target.c_str()) != 0) {
            if (errno == EEXIST || errno == ENOTEMPTY) return false;
            throw_errno("rename " + (tmp_dir_ / name_).string() + " to", target.string());
        }
        name_.clear();
        fsync_dir(target.parent_path());
        return true;
    }

private:
    UniqueFd parent_;
    fs::path tmp_dir_;
    std::string name_;
    UniqueFd dir_;
};

void emit_note(const ExtractOptions& options, const Digest& diff_id, const ExtractStats& stats) {
    std::string note = summary_note(stats);
    if (note.empty()) return;
    note = "layer " + diff_id.short_form() + ": " + note;
    if (options.note) options.note(note);
    else std::cerr << "aishell: note: " << note << "\n";
}

fs::path layer_path(const Store& store, const Digest& diff_id) {
    if (!diff_id.is_sha256()) throw Error("diff_id " + diff_id.str() + " is not sha256");
    return store.layers_dir() / std::string(diff_id.encoded());
}

}  // namespace

UnpackResult unpack_layer_stream(const Store& store, int compressed_fd, media_type::Compression compression,
                                 const Digest& diff_id, const ExtractOptions& options) {
    UnpackResult result;
    result.path = layer_path(store, diff_id);
    make_dirs(store.layers_dir(), 0755);
    make_dirs(store.tmp_dir(), 0755);
    if (store.lease()) store.lease()->add({LeaseEntry::layer(diff_id)});  // lease, then look (lease.hpp)
    TempTree tmp(store.tmp_dir());
    result.stats = extract_layer(compressed_fd, compression, tmp.fd(), options);
    if (result.stats.diff_id != diff_id)
        throw Error("diff_id mismatch: the image config says " + diff_id.str() + ", the layer tar is " +
                        result.stats.diff_id.str(),
                    "the image is corrupt; remove it and pull it again");
    // The records name inodes, which the rename keeps.
    result.unpacked = install_layer_tree(store.layers_dir(), std::string(diff_id.encoded()),
                                         result.stats.unmapped_owner_records,
                                         [&tmp](const fs::path& target) { return tmp.install(target); });
    if (result.unpacked && store.lease()) store.lease()->add({LeaseEntry::layer(diff_id, true)});
    if (result.unpacked) emit_note(options, diff_id, result.stats);
    else result.stats = {};
    return result;
}

UnpackResult ensure_layer_unpacked(const Store& store, const Descriptor& layer, const Digest& diff_id,
                                   const ExtractOptions& options) {
    return with_context("unpack layer " + layer.digest.short_form(), [&] {
        UnpackResult result;
        result.path = layer_path(store, diff_id);
        if (store.lease()) store.lease()->add({LeaseEntry::layer(diff_id)});  // lease, then look
        struct stat st;
        if (::lstat(result.path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return result;
        if (!store.has_blob(layer.digest))
            throw Error("blob " + layer.digest.str() + " is not in the store", "pull the image again");
        auto compression = layer_compression(layer.media_type);
        UniqueFd blob = open_file(store.blob_path(layer.digest), O_RDONLY);
        return unpack_layer_stream(store, blob.get(), compression, diff_id, options);
    });
}

}  // namespace aishell::oci
