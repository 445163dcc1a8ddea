// The build's step cache keys (see build_keys.hpp).
#include "composer/build_keys.hpp"

#include "composer/step_cache.hpp"

namespace aishell::composer {

namespace {

void add_epoch_part(std::vector<std::string>& parts, std::optional<std::int64_t> epoch) {
    if (epoch) parts.push_back("source-date-epoch=" + std::to_string(*epoch));
}

}  // namespace

oci::Digest image_key(const oci::Digest& manifest) { return step_key(manifest, {"image"}); }

oci::Digest scratch_key() { return step_key(oci::sha256_of("scratch"), {"scratch"}); }

oci::Digest metadata_key(const oci::Digest& parent, const std::string& text, std::optional<std::int64_t> epoch) {
    std::vector<std::string> parts{"meta", text};
    add_epoch_part(parts, epoch);
    return step_key(parent, parts);
}

oci::Digest layer_key(const oci::Digest& parent, const std::string& text, const std::string& mapping,
                      std::optional<std::int64_t> epoch, const std::vector<std::string>& parts) {
    std::vector<std::string> all{"layer", text, mapping};
    add_epoch_part(all, epoch);
    all.insert(all.end(), parts.begin(), parts.end());
    return step_key(parent, all);
}

std::vector<std::string> run_key_parts(const std::map<std::string, std::string>& args, const std::string& network,
                                       std::vector<std::string> mount_parts) {
    std::vector<std::string> parts;
    for (const auto& [k, v] : args) parts.push_back(k + "=" + v);
    parts.push_back("network=" + network);
    for (auto& p : mount_parts) parts.push_back(std::move(p));
    return parts;
}

std::vector<std::string> workdir_key_parts(std::optional<std::pair<std::uint32_t, std::uint32_t>> owner) {
    if (!owner) return {};
    return {"owner=" + std::to_string(owner->first) + ":" + std::to_string(owner->second)};
}

std::string heredoc_key_part(const std::string& name, const std::string& content) { return "<<" + name + "\n" + content; }

}  // namespace aishell::composer
