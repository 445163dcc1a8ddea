// Writing images from the store as one image archive (archive_format.hpp): a tar stream to a
// file or a pipe, OCI layout and Docker archive over the same blob files.
//
// Blobs go out as they are in the store (no recompression: the manifests keep their digests),
// each once however many images share it, streamed through a 1 MiB buffer and re-hashed on the
// way, so memory stays bounded and a corrupt store blob is an error, not a bad archive. The
// one conversion: Docker before 23.0 cannot read zstd layers (its pkg/archive knows gzip, bzip2
// and xz), so for the Docker side each zstd layer gets a gzip copy, made before the tar starts
// (a tar header needs the size) in a temp file under the store's tmp/, its uncompressed bytes
// checked against the config's diff_id. manifest.json's Layers then name the copies, whose
// uncompressed digests are the diff_ids Docker checks; the OCI side keeps the zstd blobs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "oci/archive_format.hpp"
#include "oci/image.hpp"
#include "oci/store.hpp"

namespace aishell::oci::image_archive {

// Which sides an archive has (`aishell save --format`).
enum class Sides { Oci, Docker, Both };

// One image to save and the names it goes under (several names of one image share an entry
// of manifest.json and have one index.json entry each).
struct SaveImage {
    Image image;
    std::vector<ArchiveName> names;
};

// True for a layer the Docker side must get a gzip copy of (zstd, by media type).
bool docker_needs_gzip_copy(const Descriptor& layer);

// A blob member of the archive: a store blob, or a gzip copy made for the Docker side.
struct ArchiveBlob {
    Digest digest;
    std::int64_t size = 0;
    bool gzip_copy = false;
    bool operator==(const ArchiveBlob&) const = default;
};

// Everything an archive holds, in tar order: its documents (member name, content), then its
// blobs, each once.
struct ArchivePlan {
    std::vector<std::pair<std::string, std::string>> documents;
    std::vector<ArchiveBlob> blobs;
};

// The plan for images. gzip_copies: for each zstd layer (by digest) the descriptor of its gzip
// copy; needed (Error otherwise) for every such layer when the Docker side is written.
// Documents come before blobs (Docker 25 writes them last, in directory order), so that a
// reader of a stream knows the images before their blobs arrive.
ArchivePlan plan_archive(const std::vector<SaveImage>& images, Sides sides,
                         const std::map<Digest, Descriptor>& gzip_copies);

struct ArchiveWriteOptions {
    Sides sides = Sides::Both;
    // A line for the user (each zstd layer converted for the Docker side).
    std::function<void(const std::string&)> notice;
    // Called before each chunk of at most 1 MiB is read; may throw to stop the save (a held
    // Ctrl-C: the caller then removes what it wrote).
    std::function<void()> checkpoint;
    // When out_fd is a pipe or a socket: called with it before each write(2), to wait until it
    // is writable; may throw to stop the save (a reader that stopped reading would otherwise
    // hold the save in write(2), where no checkpoint runs). Writes then never block: at most
    // what the pipe has room for.
    std::function<void(int fd)> before_write;
};

// Writes the archive of images to out_fd (a file or a pipe; nothing is seeked). The caller
// holds a lease on the images' blobs (lease.hpp) so that no prune removes them meanwhile.
// Throws Error naming the blob or the output that failed; what was written is then partial.
void write_image_archive(const Store& store, const std::vector<SaveImage>& images, int out_fd,
                         const ArchiveWriteOptions& options);

}  // namespace aishell::oci::image_archive
