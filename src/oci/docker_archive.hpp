// The Docker side of an image archive, as `docker save` writes it (moby image/tarexport): a
// manifest.json listing each image's config file, names and layer files, and the legacy
// `repositories` file naming each top layer's v1 id. Both layouts use the same manifest.json:
//   Docker < 25: Config "<id>.json", Layers "<v1 id>/layer.tar" (a layer shared with another
//                image is a symlink to the first one's file)
//   Docker 25+:  Config and Layers "blobs/sha256/<hex>", the archive also an OCI layout
// Paths inside the archive are relative to its root; they are checked by the reader
// (image_archive.hpp), not here.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace aishell::oci {

// manifest.json and repositories are small (a few hundred bytes per image); anything larger
// than this is not a Docker archive's and is refused before it is parsed.
inline constexpr std::uint64_t kMaxDockerArchiveJsonSize = 4 * 1024 * 1024;

struct DockerArchiveImage {
    std::string config;                  // path of the config file in the archive
    std::vector<std::string> repo_tags;  // "busybox:latest"; may be empty (an untagged image)
    std::vector<std::string> layers;     // paths of the layer tars, base layer first
    bool operator==(const DockerArchiveImage&) const = default;
};

// Parses manifest.json: a JSON array of {"Config", "RepoTags", "Layers", ...}; other fields
// ("Parent", "LayerSources") are ignored. Throws Error naming the entry and field that is wrong.
std::vector<DockerArchiveImage> parse_docker_archive_manifest(std::string_view bytes);
// The manifest.json text for images (what `docker save` writes: RepoTags null when empty).
std::string docker_archive_manifest_to_json(const std::vector<DockerArchiveImage>& images);

// Parses repositories: {"REPO": {"TAG": "<v1 id>"}}, returned as v1 id -> ["REPO:TAG", ...].
// Throws Error when the document is not of that shape.
std::map<std::string, std::vector<std::string>> parse_docker_repositories(std::string_view bytes);

}  // namespace aishell::oci
