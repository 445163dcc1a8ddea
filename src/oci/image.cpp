#include "oci/image.hpp"

#include "common/error.hpp"

namespace aishell::oci {

std::int64_t Image::size() const {
    std::int64_t total = manifest.config.size;
    for (const auto& layer : manifest.layers) total += layer.size;
    return total;
}

namespace {

Descriptor pick_from_index(const Store& store, const Descriptor& index_desc, const Platform& wanted, BlobCheck check) {
    std::string bytes = read_manifest_blob(store, index_desc, check);
    Index index = parse_index(bytes, detect_manifest_kind(index_desc.media_type, bytes));
    for (const auto& entry : index.manifests) {
        if (!entry.platform || !platform_matches(wanted, *entry.platform)) continue;
        if (store.has_blob(entry.digest)) return entry;
    }
    throw Error("no manifest for platform " + wanted.str() + " in the store",
                "pull the image again with --platform " + wanted.str());
}

}  // namespace

ImageConfig parse_image_config(const Manifest& manifest, std::string_view bytes) {
    ImageConfig config = ImageConfig::parse(bytes);
    std::size_t diff_ids = config.diff_ids().size();
    // Layer i is unpacked to layers/<diff_ids[i]>: every layer needs its own diff_id.
    if (diff_ids != manifest.layers.size())
        throw Error("config has " + std::to_string(diff_ids) + " diff_ids but the manifest has " +
                    std::to_string(manifest.layers.size()) + " layers");
    return config;
}

Image load_image(const Store& store, const ImageEntry& entry, const std::optional<Platform>& platform, BlobCheck check) {
    return with_context("image " + entry.name, [&] {
        Image image;
        image.name = entry.name;
        image.manifest_descriptor = entry.descriptor;
        std::string bytes = read_manifest_blob(store, entry.descriptor, check);
        ManifestKind kind = detect_manifest_kind(entry.descriptor.media_type, bytes);
        if (is_index_kind(kind)) {
            image.manifest_descriptor = pick_from_index(store, entry.descriptor, platform.value_or(Platform::host()), check);
            bytes = read_manifest_blob(store, image.manifest_descriptor, check);
            kind = detect_manifest_kind(image.manifest_descriptor.media_type, bytes);
        }
        image.manifest = parse_manifest(bytes, kind);
        image.config_digest = image.manifest.config.digest;
        std::string config = store.read_blob(image.config_digest, kMaxConfigSize, check);
        check_blob_length(image.manifest.config, config.size());
        image.config = parse_image_config(image.manifest, config);
        return image;
    });
}

std::pair<std::string, std::string> split_repository_tag(const std::string& name) {
    auto at = name.find('@');
    if (at != std::string::npos) return {name.substr(0, at), "<none>"};
    auto slash = name.rfind('/');
    auto colon = name.rfind(':');
    if (colon != std::string::npos && (slash == std::string::npos || colon > slash))
        return {name.substr(0, colon), name.substr(colon + 1)};
    return {name, "<none>"};
}

}  // namespace aishell::oci
