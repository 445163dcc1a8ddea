// Loading image archives into the store (`aishell load`): what `docker save` (the layout of
// Docker < 25 with <id>/layer.tar, and Docker 25's, which is an OCI layout too), `podman save`
// (docker-archive and oci-archive), `skopeo copy ... oci-archive:` and `aishell save` write,
// plain or gzip-compressed, from a file or a pipe.
//
// One pass over the archive: every regular member is spooled into the store's tmp/ while it is
// hashed (a pipe may put manifest.json last, so nothing can be decided before the end; nothing is
// held in memory but names and links). Then the images are assembled and every blob is checked
// against its digest, each layer streamed once more (decompressed, diff_id hashed, read as a
// tar). Only then, under the store lock, are the blobs published and the names tagged, as a pull
// commits; a failure there takes back the names and the blobs this load made (its lease, as a
// build's rollback does). Any failure before leaves the store as it was.
//
// Which side of an archive: index.json (the OCI side) when there is one, so the manifests'
// digests survive a round trip; else manifest.json (the Docker side), for which an OCI manifest
// is made: the config blob is kept byte for byte (the image id, the config's digest, stays
// Docker's), plain layer tars are compressed (gzip or zstd) and compressed ones kept as they are.
//
// Names: RepoTags (manifest.json; for the OCI side, the entry whose config is the image's), else
// the `io.containerd.image.name` annotation, else `org.opencontainers.image.ref.name`, else the
// legacy repositories file (Docker side); options.name renames a single image.
//
// Hostile archives (the archive is untrusted): member names that are absolute or hold "..", a
// member given twice, a symlink that leaves the archive or loops, a blob whose bytes do not match
// its digest or size, a blob missing, a JSON file over its size limit, a layer that is not a tar
// or whose diff_id is not the config's: each is one Error, and the store is unchanged.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/media_types.hpp"
#include "oci/store.hpp"
#include "oci/types.hpp"

namespace aishell::oci {

// A member name cleaned lexically ("./a//b/" -> "a/b", "." or "./" -> ""). Throws Error for an
// absolute name or one with a ".." component: an image archive never needs either.
std::string clean_archive_name(std::string_view name);

// The regular member that name leads to, following the archive's links: symlinks (member ->
// target as written, relative to the link's directory) and hardlinks (member -> cleaned target,
// relative to the archive root, as tar records them). Throws Error for a link whose target is
// absolute or climbs above the archive's root, and for a chain of more than 40 links (a loop;
// Linux's MAXSYMLINKS is 40 too).
std::string resolve_archive_link(const std::map<std::string, std::string>& symlinks,
                                 const std::map<std::string, std::string>& hardlinks, std::string name);

struct ArchiveLoadOptions {
    // For the plain layer tars of the Docker side.
    media_type::Compression compression = media_type::Compression::Gzip;
    // Names the archive's only image instead of the names it carries.
    std::optional<std::string> name;
    // Called for every name before anything is committed; throws Error to refuse it.
    std::function<void(const std::string& name)> check_name;
    // Called before each read of the archive's fd, with the fd: waits until it is readable
    // and throws to stop the load (an interrupt: the store is then as it was). Unset: plain
    // blocking reads.
    std::function<void(int fd)> before_read;
};

struct LoadedImage {
    std::vector<std::string> names;
    Descriptor descriptor;  // what the names point to in index.json (a manifest or an index)
};

// Reads the archive from fd (to its end; not closed) into store. Throws Error; the store is then
// as it was.
std::vector<LoadedImage> load_image_archive(Store& store, int fd, const ArchiveLoadOptions& options);

}  // namespace aishell::oci
