#include "composer/chain_record.hpp"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "composer/chain_names.hpp"
#include "oci/json_parse.hpp"
#include "oci/json_text.hpp"

namespace aishell::composer {

using nlohmann::json;

namespace {

constexpr int kRecordVersion = 1;
constexpr std::uint64_t kMaxRecordSize = 64u << 20;

json build_to_json(const ChainBuild& b) {
    return json{{"name", b.name},           {"manifest", b.manifest.str()}, {"custom", b.custom},
                {"input_hash", b.input_hash}, {"content_hash", b.content_hash}, {"dockerfile_hash", b.dockerfile_hash}, {"from", b.from},
                {"built_on", b.built_on},   {"generation", b.generation}};
}

// Every field is checked: a record that does not parse stops the chain (Error) rather than
// being taken for "nothing built", which would rebuild and re-point every image.
ChainBuild build_from_json(const json& j) {
    ChainBuild b;
    b.name = j.at("name").get<std::string>();
    b.manifest = oci::Digest::parse(j.at("manifest").get<std::string>());
    b.custom = j.at("custom").get<bool>();
    b.input_hash = j.at("input_hash").get<std::string>();
    b.content_hash = j.at("content_hash").get<std::string>();
    b.dockerfile_hash = j.value("dockerfile_hash", std::string());  // added after version 1 was out
    b.from = j.at("from").get<std::map<std::string, std::string>>();
    b.built_on = j.at("built_on").get<std::string>();
    b.generation = j.at("generation").get<std::uint64_t>();
    return b;
}

json memo_to_json(const ContextMemo& m) {
    return json{{"fingerprint", m.fingerprint},
                {"content_hash", m.content_hash},
                {"dockerfile_hash", m.dockerfile_hash},
                {"from_images", m.from_images},
                {"final_from", m.final_from}};
}

ContextMemo memo_from_json(const json& j) {
    ContextMemo m;
    m.fingerprint = j.at("fingerprint").get<std::string>();
    m.content_hash = j.at("content_hash").get<std::string>();
    m.dockerfile_hash = j.value("dockerfile_hash", std::string());  // added after version 1 was out
    m.from_images = j.at("from_images").get<std::vector<std::string>>();
    m.final_from = j.at("final_from").get<std::string>();
    return m;
}

bool exists_dir(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

fs::path chain_dir(const oci::Store& store) { return store.root() / "chain"; }
fs::path chain_record_path(const oci::Store& store) { return chain_dir(store) / "record.json"; }

std::string chain_record_to_json(const ChainRecord& r) {
    json exts = json::object();
    for (const auto& [project, b] : r.exts) exts[project] = build_to_json(b);
    json contexts = json::object();
    for (const auto& [dir, m] : r.contexts) contexts[dir] = memo_to_json(m);
    json j{{"version", kRecordVersion},
           {"generation", r.generation},
           {"base", r.base ? build_to_json(*r.base) : json(nullptr)},
           {"exts", exts},
           {"contexts", contexts}};
    return oci::json_document(j, 1) + "\n";
}

ChainRecord chain_record_from_json(std::string_view text, const std::string& path) {
    json j = oci::parse_json_or_throw(text, path);
    const std::string hint = "remove " + path + " to let aishell rebuild the chain's images";
    if (!j.is_object() || j.value("version", 0) != kRecordVersion)
        throw Error(path + " is not a chain record of version " + std::to_string(kRecordVersion), hint);
    try {
        ChainRecord r;
        r.generation = j.at("generation").get<std::uint64_t>();
        if (!j.at("base").is_null()) r.base = build_from_json(j.at("base"));
        for (const auto& [project, b] : j.at("exts").items()) r.exts[project] = build_from_json(b);
        for (const auto& [dir, m] : j.at("contexts").items()) r.contexts[dir] = memo_from_json(m);
        return r;
    } catch (const json::exception& e) {
        throw Error(path + " is not a valid chain record: " + e.what(), hint);
    } catch (Error& e) {
        e.add_context(path);
        e.set_hint(hint);
        throw;
    }
}

ChainRecord read_chain_record(const oci::Store& store) {
    fs::path path = chain_record_path(store);
    auto text = read_file_if_exists(path, kMaxRecordSize);
    if (!text) return {};
    return chain_record_from_json(*text, path.string());
}

void write_chain_record(const oci::Store& store, const oci::StoreLock& held, const ChainRecord& record) {
    if (!held.held()) throw Error("internal: the chain record is written without the store lock");
    make_dirs(chain_dir(store), 0700);
    write_file_atomic(chain_record_path(store), chain_record_to_json(record), 0600);
}

std::string_view tier_name(Tier tier) {
    switch (tier) {
        case Tier::Foundation: return "foundation";
        case Tier::Base: return "base";
        case Tier::Ext: return "ext";
        case Tier::Other: break;
    }
    return "other";
}

ImageTier image_tier(const ChainRecord& record, const oci::ImageEntry& entry) {
    if (entry.name == kFoundationImage) return {Tier::Foundation, {}, false};
    if (entry.name == kBaseImage) {
        bool custom = record.base && record.base->custom && record.base->manifest == entry.descriptor.digest;
        return {Tier::Base, {}, custom};
    }
    if (entry.name.starts_with(kExtImagePrefix))
        for (const auto& [project, b] : record.exts)
            if (b.name == entry.name && b.manifest == entry.descriptor.digest) return {Tier::Ext, project, false};
    return {};
}

std::vector<ChainOrphan> chain_orphans(const ChainRecord& record, const std::vector<oci::ImageEntry>& index) {
    std::map<std::string, oci::Digest> named;
    for (const auto& e : index) named[e.name] = e.descriptor.digest;
    std::vector<ChainOrphan> out;
    for (const auto& e : index) {
        if (!e.name.starts_with(kExtImagePrefix)) continue;
        const ChainBuild* build = nullptr;
        std::string project;
        for (const auto& [p, b] : record.exts)
            if (b.name == e.name && b.manifest == e.descriptor.digest) build = &b, project = p;
        if (!build) {
            out.push_back({e.name, e.descriptor.digest, {}, "not an image the chain built"});
            continue;
        }
        if (!exists_dir(project)) {
            out.push_back({e.name, e.descriptor.digest, project, "its project " + project + " is gone"});
            continue;
        }
        for (const auto& [from_name, digest] : build->from) {
            auto now = named.find(from_name);
            if (now == named.end() || now->second.str() != digest) {
                out.push_back({e.name, e.descriptor.digest, project, "built on " + from_name + ", which has moved on"});
                break;
            }
        }
    }
    return out;
}

bool forget_ext(ChainRecord& record, const std::string& project) { return record.exts.erase(project) > 0; }

std::string ext_image_name(const std::string& project_path) {
    return std::string(kExtImagePrefix) + std::string(oci::sha256_of(project_path).encoded().substr(0, 12));
}

}  // namespace aishell::composer
