// The image archive `aishell save` writes and `aishell load` reads: one tar that is both an OCI
// image layout (image-spec image-layout.md: oci-layout, index.json, blobs/<alg>/<hex>) and a
// Docker archive (manifest.json naming Config, RepoTags and Layers by their paths in the tar,
// plus the legacy `repositories` file), the layout `docker save` writes since Docker 25 (moby
// daemon/internal/image/tarexport/save.go). Both sides name the same blob files, so one file
// serves `docker load` (any version since 1.10 reads manifest.json), `podman load`, and
// skopeo's oci-archive: and docker-archive: transports.
//
// This header holds the names and the small JSON documents of that format (no tar I/O), so
// that the writer (archive_write.hpp) and a reader agree on them; manifest.json's items are
// docker_archive.hpp's DockerArchiveImage (its parser and writer serve both layouts).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/digest.hpp"
#include "oci/docker_archive.hpp"
#include "oci/types.hpp"

namespace aishell::oci::image_archive {

// Member names at the top of the tar.
inline constexpr std::string_view kOciLayoutFile = "oci-layout";       // image-layout.md
inline constexpr std::string_view kIndexFile = "index.json";           // image-layout.md
inline constexpr std::string_view kDockerManifestFile = "manifest.json";  // tarexport.go
inline constexpr std::string_view kRepositoriesFile = "repositories";  // tarexport.go (legacy)
inline constexpr std::string_view kBlobsDir = "blobs";

// The annotation containerd (and Docker 25) put on each index.json entry: the image's full,
// normalized name ("docker.io/library/aishell:base"). org.opencontainers.image.ref.name
// (types.hpp's kRefNameAnnotation) carries only the tag there ("base").
inline constexpr std::string_view kImageNameAnnotation = "io.containerd.image.name";

// The oci-layout file's content, as Docker 25 writes it.
inline constexpr std::string_view kOciLayoutContent = R"({"imageLayoutVersion": "1.0.0"})";

// "blobs/sha256/<hex>": where a blob is in the tar (forward slashes on every OS, as
// save.go's path.Join).
std::string blob_member(const Digest& digest);
// The digest a member name "blobs/<alg>/<hex>" stands for; nullopt for any other name
// (including "./blobs/..." and names with more or fewer components).
std::optional<Digest> blob_member_digest(std::string_view member);

// How one image is named in the archive, from its name in the store (reference grammar;
// registry::archive_name computes it):
//   repo_tag   RepoTags in manifest.json, Docker's familiar form: "aishell:base",
//              "busybox:latest", "127.0.0.1:5000/busybox:latest"; a name without a tag gets
//              ":latest". Empty for a name that is only a digest (Docker puts no digest in
//              RepoTags: the image loads untagged).
//   image_name io.containerd.image.name, the normalized reference
//              ("docker.io/library/aishell:base").
//   ref_name   org.opencontainers.image.ref.name, the tag only ("base"), as Docker 25 and
//              containerd's exporter write it; empty for a digest-only name.
struct ArchiveName {
    std::string repo_tag;
    std::string image_name;
    std::string ref_name;
    bool operator==(const ArchiveName&) const = default;
};

// `repositories`: {"<familiar repository>": {"<tag>": "<id>"}} for every RepoTag, where id is
// the hex of the image's top layer member (Docker 25 writes its top layer's hex, which is its
// blob's name there). Only pre-1.10 loaders read it; Docker writes it still, so it is here.
// Empty string when no item has a RepoTag (Docker then writes no file).
std::string repositories_json(const std::vector<DockerArchiveImage>& items);

// One image in the archive's index.json: its manifest and the names it is saved under.
struct IndexImage {
    Descriptor manifest;  // mediaType, digest, size (other fields of the store's entry dropped)
    std::vector<ArchiveName> names;
};
// index.json: one entry per name (annotated with kImageNameAnnotation and, for a tagged name,
// kRefNameAnnotation), or one entry without annotations for an image saved with no name, in
// the order given (save.go's manifestDescriptors).
std::string archive_index_json(const std::vector<IndexImage>& images);

}  // namespace aishell::oci::image_archive
