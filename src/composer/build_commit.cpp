// Committing a build's result (see build_commit.hpp).
#include "composer/build_commit.hpp"

#include "oci/image.hpp"
#include "oci/media_types.hpp"

namespace aishell::composer {

namespace {

std::string layer_media_type_oci(const std::string& mt) {
    if (mt == oci::media_type::kDockerLayerGzip) return std::string(oci::media_type::kOciLayerGzip);
    if (mt == oci::media_type::kDockerLayerForeignGzip) return std::string(oci::media_type::kOciLayerNondistGzip);
    return mt;
}

oci::Descriptor put_json_blob(oci::Store& store, const std::string& media_type, const std::string& bytes) {
    oci::Descriptor d;
    d.media_type = media_type;
    d.digest = store.put_blob(bytes);
    d.size = static_cast<std::int64_t>(bytes.size());
    return d;
}

}  // namespace

oci::Manifest image_manifest(const std::vector<oci::Descriptor>& layers, const oci::Descriptor& config) {
    oci::Manifest m;
    m.kind = oci::ManifestKind::OciManifest;
    m.media_type = std::string(oci::media_type::kOciManifest);
    m.config = config;
    for (auto d : layers) {
        d.media_type = layer_media_type_oci(d.media_type);
        d.annotations.clear();
        d.urls.clear();
        d.platform.reset();
        m.layers.push_back(d);
    }
    return m;
}

BuildResult commit_image(oci::Store& store, const ImageState& s, const std::vector<std::string>& tags,
                         Rollback& rollback, const CommitHooks& hooks) {
    const std::string config_bytes = oci::ImageConfig(final_config(s)).to_json();
    auto lock = store.lock_exclusive();
    const oci::Descriptor config = put_json_blob(store, std::string(oci::media_type::kOciConfig), config_bytes);
    const oci::Manifest m = image_manifest(s.layers, config);
    const oci::Descriptor md =
        put_json_blob(store, std::string(oci::media_type::kOciManifest), oci::manifest_to_json(m));
    if (hooks.last_check) hooks.last_check();
    for (const auto& tag : tags) {
        auto previous = store.find_image(tag);
        rollback.tagged(tag, previous ? std::optional(previous->descriptor) : std::nullopt, md);
        store.tag_image(tag, md);
    }
    if (hooks.on_tagged) hooks.on_tagged(lock, md);
    return {config.digest, md};
}

}  // namespace aishell::composer
