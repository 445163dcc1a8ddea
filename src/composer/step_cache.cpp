// The build step cache (see step_cache.hpp).
#include "composer/step_cache.hpp"
#include "composer/step_cache_scan.hpp"

#include <stdio.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/json_parse.hpp"
#include "oci/json_text.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kCacheVersion = 1;

// temp file + rename without fsync (see step_cache.hpp for why that is safe here).
void write_entry(const fs::path& path, std::string_view text) {
    TempFile tmp(path.parent_path(), "." + path.filename().string() + ".tmp");
    write_all(tmp.fd(), text, tmp.path().string());
    tmp.replace(path);
}

std::optional<CacheEntry> parse_entry(const std::string& text) {
    json j = oci::parse_json(text);
    if (!j.is_object() || j.value("version", 0) != kCacheVersion) return std::nullopt;
    CacheEntry e;
    e.created = j.value("created", std::string());
    if (j.contains("layer") && j["layer"].is_object()) {
        try {
            e.layer = StepLayer{oci::parse_descriptor(j["layer"]), oci::Digest::parse(j.at("diff_id").get<std::string>())};
        } catch (const std::exception&) {
            return std::nullopt;
        }
    }
    return e;
}

}  // namespace

oci::Digest step_key(const oci::Digest& parent, const std::vector<std::string>& parts) {
    oci::Sha256 h;
    auto add = [&](std::string_view s) {
        std::uint64_t n = s.size();
        h.update(&n, sizeof n);
        h.update(s);
    };
    add(parent.str());
    for (const auto& p : parts) add(p);
    return h.finish();
}

std::string StepCache::path_for(const oci::Digest& key) const {
    return (store_.cache_dir() / (std::string(key.encoded()) + ".json")).string();
}

std::optional<CacheEntry> StepCache::get(const oci::Digest& key) const {
    auto text = read_file_if_exists(path_for(key), 1 << 20);
    if (!text) return std::nullopt;
    auto entry = parse_entry(*text);
    if (entry && entry->layer && !store_.has_blob(entry->layer->descriptor.digest)) return std::nullopt;
    return entry;
}

std::string StepCache::put(const oci::Digest& key, const CacheEntry& entry) const {
    json j = {{"version", kCacheVersion}, {"created", entry.created}, {"layer", nullptr}};
    if (entry.layer) {
        j["layer"] = oci::descriptor_to_json(entry.layer->descriptor);
        j["diff_id"] = entry.layer->diff_id.str();
    }
    make_dirs(store_.cache_dir(), 0700);
    std::string path = path_for(key);
    with_context("write build cache entry " + path, [&] { write_entry(path, oci::json_document(j)); });
    return path;
}

std::vector<std::pair<std::string, std::optional<CacheEntry>>> step_cache_entries(const oci::Store& store) {
    std::vector<std::pair<std::string, std::optional<CacheEntry>>> entries;
    std::error_code ec;
    for (fs::directory_iterator it(store.cache_dir(), ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (it->path().extension() != ".json" || name.front() == '.') continue;  // a writer's temp file
        auto text = read_file_if_exists(it->path(), 1 << 20);
        if (!text) continue;
        std::optional<CacheEntry> entry;
        try {
            entry = parse_entry(*text);
        } catch (const std::exception&) {  // e.g. nlohmann's type_error for "version": "1"
        }
        entries.emplace_back(it->path().string(), std::move(entry));
    }
    return entries;
}

std::vector<oci::Digest> step_cache_roots(const oci::Store& store) {
    std::vector<oci::Digest> roots;
    for (const auto& [path, e] : step_cache_entries(store))
        if (e && e->layer) roots.push_back(e->layer->descriptor.digest);
    return roots;
}

}  // namespace aishell::composer
