// Loading a named image from the store: the manifest it names (resolving an index to the
// entry for the wanted platform), its config, and the pairing of layers with diff_ids.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/store.hpp"
#include "oci/types.hpp"

namespace aishell::oci {

struct Image {
    std::string name;               // as named in index.json
    Descriptor manifest_descriptor;  // the image manifest (after index resolution)
    Manifest manifest;
    Digest config_digest;           // the image ID, as Docker and podman show it
    ImageConfig config;
    // Total of the compressed sizes of config and layers, as `podman images` reports it.
    std::int64_t size() const;
};

// Parses an image's config and checks it against its manifest: what load_image (and so every
// consumer) relies on, which a pull checks before it commits anything. Throws Error.
ImageConfig parse_image_config(const Manifest& manifest, std::string_view bytes);

// Loads the image an index.json entry names. For an index entry, picks the manifest for
// platform (default: the host) among the ones present in the store. check: how its manifest(s)
// and config are checked (store.hpp's BlobCheck; exec trusts the store).
Image load_image(const Store& store, const ImageEntry& entry, const std::optional<Platform>& platform = std::nullopt,
                 BlobCheck check = BlobCheck::Rehash);

// Splits "host:5000/repo/name:tag" into ("host:5000/repo/name", "tag"); a digest name
// ("repo@sha256:...") yields ("repo", "<none>") as podman shows it.
std::pair<std::string, std::string> split_repository_tag(const std::string& name);

}  // namespace aishell::oci
