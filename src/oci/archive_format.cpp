#include "oci/archive_format.hpp"

#include <map>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "oci/json_text.hpp"

namespace aishell::oci::image_archive {

using nlohmann::json;

std::string blob_member(const Digest& digest) {
    return std::string(kBlobsDir) + "/" + std::string(digest.algorithm()) + "/" + std::string(digest.encoded());
}

std::optional<Digest> blob_member_digest(std::string_view member) {
    const std::string prefix = std::string(kBlobsDir) + "/";
    if (member.substr(0, prefix.size()) != prefix) return std::nullopt;
    std::string_view rest = member.substr(prefix.size());
    auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0) return std::nullopt;
    std::string_view encoded = rest.substr(slash + 1);
    if (encoded.empty() || encoded.find('/') != std::string_view::npos) return std::nullopt;
    std::string text = std::string(rest.substr(0, slash)) + ":" + std::string(encoded);
    return Digest::try_parse(text);
}

std::string repositories_json(const std::vector<DockerArchiveImage>& items) {
    // std::map: the repositories and tags in a stable order (Go's encoder sorts map keys too).
    std::map<std::string, std::map<std::string, std::string>> repos;
    for (const auto& item : items) {
        if (item.layers.empty()) continue;
        const std::string& top = item.layers.back();
        std::string id = top.substr(top.rfind('/') + 1);
        for (const auto& repo_tag : item.repo_tags) {
            // The tag follows the last ':' after the last '/' ("host:5000/repo:tag").
            auto colon = repo_tag.rfind(':');
            auto slash = repo_tag.rfind('/');
            if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) continue;
            repos[repo_tag.substr(0, colon)][repo_tag.substr(colon + 1)] = id;
        }
    }
    if (repos.empty()) return {};
    return json_document(json(repos)) + "\n";
}

std::string archive_index_json(const std::vector<IndexImage>& images) {
    Index index;
    index.kind = ManifestKind::OciIndex;
    index.media_type = std::string(media_type::kOciIndex);
    for (const auto& image : images) {
        Descriptor plain;
        plain.media_type = image.manifest.media_type;
        plain.digest = image.manifest.digest;
        plain.size = image.manifest.size;
        if (image.names.empty()) index.manifests.push_back(plain);
        for (const auto& name : image.names) {
            Descriptor named = plain;
            named.annotations[std::string(kImageNameAnnotation)] = name.image_name;
            if (!name.ref_name.empty()) named.annotations[std::string(kRefNameAnnotation)] = name.ref_name;
            index.manifests.push_back(std::move(named));
        }
    }
    return index_to_json(index);
}

}  // namespace aishell::oci::image_archive
