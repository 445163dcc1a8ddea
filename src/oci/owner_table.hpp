// The intended-owner side table of a layer tree: path (relative to the layer root) -> the
// uid:gid the layer's tar headers must carry for that entry, whatever the tree on disk says.
//
// Why: in single userns mode only the caller is mapped (to container root), so lchown to any
// other id fails with EINVAL and `COPY --chown=1000` leaves 0:0 on disk. Symlinks cannot carry
// user.* xattrs, so the wanted owner is kept beside the tree instead -- never inside it (the
// tree becomes the layer): a step keeps it in its run dir, next to the overlay upper dir. The
// COPY/ADD file step writes it for what it could not chown; a RUN-step recorder (a seccomp
// supervisor emulating chown) can append to the same format. write_layer reads it.
//
// A record names the entry it was made for by identity, not only by path: file type, inode
// number and, where the filesystem has it, birth time (statx STX_BTIME), all as the tree
// itself (the upper dir, not an overlay mounted on it) reports them. A path that is deleted or
// replaced after the record (a new inode, even one reusing the number: its birth time differs)
// no longer matches and keeps its on-disk owner. Limit: file timestamps come from the kernel's
// coarse clock (a few milliseconds), so an inode number freed and reused within one tick of
// the same record looks like the same entry (the inode generation would tell them apart but
// statx does not report it). Hardlinks: every path of a recorded inode gets the owner,
// recorded under any of its names.
//
// The file format (UTF-8 agnostic text, one record per line, '\n' ends every line):
//   aishell-owner-table 1
//   <uid> <gid> <type> <ino> <btime> <path>
// uid/gid: decimal container ids (what the tar records), 0..4294967294 (-1 means "unchanged"
// to chown and is refused); type: f d l c b p s (regular, dir, symlink, char, block, fifo,
// socket); ino: decimal; btime: <sec>.<nsec, 9 digits> or "-" when the filesystem has none;
// path: cleaned (no leading or trailing '/', no empty, "." or ".." component), bytes 0x00-0x20,
// '%' and 0x7f written as %XX (upper-case hex), everything else as is. An empty file is an
// empty table. Lines may repeat a path: the last one wins, so an append-only recorder only
// ever appends (one write(2) per line on an O_APPEND fd). Bounds: 128 MiB, 1,000,000 records,
// paths of at most 4095 bytes with components of at most 255; anything else is an error
// naming the line (the table is written by code running in the user namespace; it is parsed,
// never trusted to be well formed).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/unique_fd.hpp"

namespace aishell::oci {

// The owner a layer entry's tar header records (container ids).
struct LayerOwner {
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    bool operator==(const LayerOwner&) const = default;
};

struct BirthTime {
    std::int64_t sec = 0;
    std::uint32_t nsec = 0;
    bool operator==(const BirthTime&) const = default;
};

// What identifies one inode of the tree (statx without following a symlink).
struct EntryIdentity {
    mode_t type = 0;  // S_IFMT bits
    std::uint64_t ino = 0;
    std::uint32_t nlink = 1;
    std::optional<BirthTime> btime;  // nullopt: the filesystem does not report it
};

// statx(dirfd, name, AT_SYMLINK_NOFOLLOW), dirfd itself when name is empty; nullopt when the
// entry does not exist (ENOENT, ENOTDIR); other failures throw SystemError naming the entry.
std::optional<EntryIdentity> entry_identity_at(int dirfd, const std::string& name);

struct OwnerRecord {
    LayerOwner owner;
    mode_t type = 0;
    std::uint64_t ino = 0;
    std::optional<BirthTime> btime;

    static OwnerRecord for_entry(LayerOwner owner, const EntryIdentity& id) {
        return OwnerRecord{owner, id.type, id.ino, id.btime};
    }
    // Whether this record was made for the inode id describes. A record with a birth time
    // matches only an entry whose birth time is known and equal.
    bool matches(const EntryIdentity& id) const noexcept {
        return type == id.type && ino == id.ino && (!btime || (id.btime && *btime == *id.btime));
    }
    bool operator==(const OwnerRecord&) const = default;
};

// Refuses (Error naming the path) what is not a cleaned path relative to a layer root.
void check_layer_path(std::string_view path);

class OwnerTable {
public:
    static constexpr std::size_t kMaxRecords = 1'000'000;
    static constexpr std::uint64_t kMaxFileBytes = 128ull << 20;
    static constexpr std::size_t kMaxPathBytes = 4095;
    static constexpr std::size_t kMaxComponentBytes = 255;
    static constexpr std::string_view kHeader = "aishell-owner-table 1";

    // Adds or replaces the record of path (checked with check_layer_path); throws Error past
    // kMaxRecords.
    void set(const std::string& path, const OwnerRecord& record);
    bool erase(const std::string& path);
    // Erases path and everything beneath it; returns how many records went.
    std::size_t erase_tree(const std::string& path);

    const OwnerRecord* find(const std::string& path) const;
    // The owner recorded for the entry at path whose identity is id: the path's own record if
    // it matches, else (a non-directory with several links) a matching record of another of
    // the inode's names. nullopt: keep what the disk says.
    std::optional<LayerOwner> owner_of(const std::string& path, const EntryIdentity& id) const;

    bool empty() const noexcept { return records_.empty(); }
    std::size_t size() const noexcept { return records_.size(); }
    const std::map<std::string, OwnerRecord>& records() const noexcept { return records_; }

    // The file's text: the header, then one line per path in bytewise order.
    std::string serialize() const;
    // Parses the file's text (what: the file, for messages); throws Error "WHAT:LINE: ...".
    static OwnerTable parse(std::string_view text, std::string_view what);

private:
    std::map<std::string, OwnerRecord> records_;
    // ino -> paths, built on the first hardlink lookup and dropped on every change.
    mutable std::optional<std::unordered_multimap<std::uint64_t, const std::string*>> by_ino_;
};

// One record's line, '\n' included (for append-only recorders; the header line is kHeader).
std::string format_owner_record(const std::string& path, const OwnerRecord& record);

// The table of layer tree layers_dir/NAME lives beside it, as layers_dir/NAME.owners (a layer
// tree is an overlay lowerdir: nothing may be added inside it). It describes that tree's
// inodes: the upper dir a step renamed into place keeps them.
std::filesystem::path layer_owner_table_path(const std::filesystem::path& layers_dir, const std::string& name);

// The intended owners of a stack of layer trees, as an overlay of them shows the entries: the
// owner of a path is the one the topmost layer holding an entry there recorded for that very
// entry, if it did. A whiteout, an opaque directory or a non-directory above the path in a
// higher layer hides the layers beneath, as overlayfs does. Trees are walked without
// following symlinks, and only for paths some table has a record of.
class LayeredOwners {
public:
    struct Layer {
        UniqueFd dir;                     // the tree (O_RDONLY | O_DIRECTORY)
        std::optional<OwnerTable> table;  // nullopt: the tree has no table
    };
    LayeredOwners() = default;
    explicit LayeredOwners(std::vector<Layer> layers_top_first);
    // layers_dir/NAME with their tables (top first); a missing table is no error.
    static LayeredOwners load(const std::filesystem::path& layers_dir, const std::vector<std::string>& names_top_first);

    bool has_records() const noexcept { return has_records_; }
    std::optional<LayerOwner> owner_of(const std::string& path) const;
    // Whether an overlay of the layers shows an entry at path (walked as owner_of walks them,
    // whatever the tables hold).
    bool shows(const std::string& path) const;

private:
    std::vector<Layer> layers_;
    bool has_records_ = false;
};

// The records of table for another copy of the same tree (a layer tree made from the same
// tar): each path's identity as tree_fd has it; paths it lacks are left out.
OwnerTable reidentify(const OwnerTable& table, int tree_fd);

// Installs a layer tree as layers_dir/NAME with `owners`, its table, beside it: the one way a
// pulled layer (layer_unpack) and a build step's upper dir (composer's commit_upper) go into
// place. The table is written first, so a tree that needs one is never there without it.
// `rename_into_place(target)` moves the tree there, false when target exists already. When
// another process installed the same tree first (the same tar: other inodes), or one that is
// there lacks its table, the table is written for that tree's inodes (reidentify). Returns
// whether this call installed the tree.
bool install_layer_tree(const std::filesystem::path& layers_dir, const std::string& name, const OwnerTable& owners,
                        const std::function<bool(const std::filesystem::path& target)>& rename_into_place);

// Reads a table file (opened without following a symlink; at most kMaxFileBytes); nullopt
// when it does not exist.
std::optional<OwnerTable> read_owner_table(const std::filesystem::path& file);
// Writes table's text to fd from its current offset (short writes and EINTR retried).
void write_owner_table(int fd, const OwnerTable& table, std::string_view what);

}  // namespace aishell::oci
