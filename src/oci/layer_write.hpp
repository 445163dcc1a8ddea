// Layer writing: the inverse of extraction. A directory in overlayfs format (an overlay upper
// dir after a RUN step, or a tree COPY filled) becomes one OCI layer blob in the store:
//   0/0 character device NAME        -> .wh.NAME (empty regular file)
//   dir with user.overlay.opaque=y   -> the dir, then DIR/.wh..wh..opq
// Entries are written in bytewise name order with normalized headers (PAX restricted: numeric
// owners only, no user/group names, no atime/ctime, whole-second mtimes, optionally clamped to
// SOURCE_DATE_EPOCH), so the same tree gives the same bytes and so the same digests. Hardlinks
// within the tree stay hardlinks; xattrs user.* (except overlayfs's own user.overlay.*) and
// security.capability are kept. One pass: the uncompressed stream is hashed for the diff_id
// while it is compressed into a verified blob. The tree is trusted (aishell made it); it is
// still read with *at calls and O_NOFOLLOW, so a symlink in it is never followed.
// Owners: what the tree says (through map_owner), unless an intended-owner table
// (owner_table.hpp) has a record for that entry -- the same inode, not only the same path --
// which then decides: single userns mode cannot chown to most ids, the table remembers them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "oci/digest.hpp"
#include "oci/media_types.hpp"
#include "oci/owner_table.hpp"
#include "oci/store.hpp"
#include "oci/types.hpp"

namespace aishell::oci {

struct LayerWriteOptions {
    media_type::Compression compression = media_type::Compression::Gzip;
    // Compression level; 0 means the default for the method (gzip 1: fastest, which matters
    // more for build steps than a few percent of size; zstd 3).
    int level = 0;
    // SOURCE_DATE_EPOCH: mtimes later than this are clamped to it.
    std::optional<std::int64_t> clamp_mtime;
    // Maps the owner found on disk (host ids when the tree is read outside the user namespace)
    // to the one the tar records (container ids), given the entry's path in the layer.
    // Identity when empty.
    std::function<LayerOwner(const std::string& path, LayerOwner on_disk)> map_owner;
    // Intended owners (container ids) that override the ones above for the entries whose
    // records match (path and identity); records of entries no longer in the tree, or replaced
    // since, are ignored. Not owned; may be null.
    const OwnerTable* owners = nullptr;
    // The intended owners of the layers beneath the tree (a step's lowerdirs), for the entries
    // the tree only copied up from them: a directory that is not opaque (merged with theirs),
    // or a non-directory overlayfs marked with its copy-up origin (user.overlay.origin). Such
    // an entry keeps the owner its lower layer recorded, unless `owners` has a record of it:
    // a later step that creates /opt/app/bin must not turn a recorded /opt/app into 0:0.
    const LayeredOwners* lower_owners = nullptr;
    // The owner of the entries the step itself made (single userns mode, a RUN under a non-root
    // USER: the process ran as the caller, who owns everything on disk, while it saw itself as
    // USER): every entry that has no record in `owners` and that the lower layers (see
    // lower_owners, which must then be set) do not show at its path. Copied-up entries keep
    // their owners, as they would under Docker. Unset: the on-disk owner, mapped.
    std::optional<LayerOwner> new_entry_owner;
};

struct LayerWriteResult {
    Descriptor descriptor;  // the blob: media type, digest and size of the compressed bytes
    Digest diff_id;         // sha256 of the uncompressed tar
    std::uint64_t entries = 0;
    std::uint64_t uncompressed_bytes = 0;
    std::uint64_t owners_from_table = 0;  // entries (hardlink entries too) whose owner a table gave
    // Those entries' records, with the identities of the tree's inodes: the table of the new
    // layer tree when the tree itself becomes one (layer_owner_table_path).
    OwnerTable owners;
};

// Writes the tree beneath dirfd as a layer blob into store. An empty tree gives no layer
// (nullopt), as a RUN that changed nothing adds none.
std::optional<LayerWriteResult> write_layer(Store& store, int dirfd, const LayerWriteOptions& options = {});

// Compresses a byte stream into a blob: what write_layer puts its tar through, and what
// `aishell load` puts a Docker archive's plain layer tars through. finish() ends the stream;
// the caller then commits the writer.
class LayerCompressor {
public:
    virtual ~LayerCompressor() = default;
    virtual void write(const void* data, std::size_t size) = 0;
    virtual void finish() = 0;
};
// level 0: the method's default (gzip 1, zstd 3; see LayerWriteOptions::level).
std::unique_ptr<LayerCompressor> make_layer_compressor(BlobWriter& out, media_type::Compression compression,
                                                       int level = 0);

// The layer media type for a compression.
std::string_view layer_media_type(media_type::Compression compression);

}  // namespace aishell::oci
