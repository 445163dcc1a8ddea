// manifest.json and repositories of a Docker archive. See docker_archive.hpp.
#include "oci/docker_archive.hpp"

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "oci/json_parse.hpp"
#include "oci/json_text.hpp"

namespace aishell::oci {

using nlohmann::json;

namespace {

// The caller's context names the file.
json parse_limited(std::string_view bytes) {
    if (bytes.size() > kMaxDockerArchiveJsonSize)
        throw Error("the file is " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                    std::to_string(kMaxDockerArchiveJsonSize));
    return parse_json_or_throw(bytes, "the file");
}

std::string non_empty_string(const json& entry, const char* field) {
    auto it = entry.find(field);
    if (it == entry.end() || !it->is_string() || it->get_ref<const std::string&>().empty())
        throw Error(std::string("\"") + field + "\" is missing or not a non-empty string");
    return it->get<std::string>();
}

// A list of non-empty strings; null or absent is an empty list (Docker writes "RepoTags": null
// for an untagged image).
std::vector<std::string> string_list(const json& entry, const char* field) {
    std::vector<std::string> out;
    auto it = entry.find(field);
    if (it == entry.end() || it->is_null()) return out;
    if (!it->is_array()) throw Error(std::string("\"") + field + "\" is not a list");
    for (const auto& v : *it) {
        if (!v.is_string() || v.get_ref<const std::string&>().empty())
            throw Error(std::string("\"") + field + "\" holds a value that is not a non-empty string");
        out.push_back(v.get<std::string>());
    }
    return out;
}

}  // namespace

std::vector<DockerArchiveImage> parse_docker_archive_manifest(std::string_view bytes) {
    return with_context("manifest.json", [&] {
        json doc = parse_limited(bytes);
        if (!doc.is_array()) throw Error("not a list of images");
        std::vector<DockerArchiveImage> images;
        for (std::size_t i = 0; i < doc.size(); ++i) {
            with_context("image " + std::to_string(i + 1), [&] {
                const json& entry = doc[i];
                if (!entry.is_object()) throw Error("not an object");
                DockerArchiveImage image;
                image.config = non_empty_string(entry, "Config");
                image.repo_tags = string_list(entry, "RepoTags");
                auto layers = entry.find("Layers");
                if (layers == entry.end() || !layers->is_array()) throw Error("\"Layers\" is missing or not a list");
                image.layers = string_list(entry, "Layers");
                images.push_back(std::move(image));
            });
        }
        return images;
    });
}

std::string docker_archive_manifest_to_json(const std::vector<DockerArchiveImage>& images) {
    json doc = json::array();
    for (const auto& image : images) {
        json entry = {{"Config", image.config}};
        entry["RepoTags"] = image.repo_tags.empty() ? json(nullptr) : json(image.repo_tags);
        entry["Layers"] = image.layers;
        doc.push_back(std::move(entry));
    }
    return json_document(doc);
}

std::map<std::string, std::vector<std::string>> parse_docker_repositories(std::string_view bytes) {
    return with_context("repositories", [&] {
        json doc = parse_limited(bytes);
        if (!doc.is_object()) throw Error("not an object of repositories");
        std::map<std::string, std::vector<std::string>> names;
        for (const auto& [repository, tags] : doc.items()) {
            if (repository.empty() || !tags.is_object())
                throw Error("repository \"" + repository + "\" is not an object of tags");
            for (const auto& [tag, id] : tags.items()) {
                if (tag.empty() || !id.is_string() || id.get_ref<const std::string&>().empty())
                    throw Error("tag \"" + repository + ":" + tag + "\" does not name a layer id");
                names[id.get<std::string>()].push_back(repository + ":" + tag);
            }
        }
        return names;
    });
}

}  // namespace aishell::oci
