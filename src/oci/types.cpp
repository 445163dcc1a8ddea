#include "oci/types.hpp"

#include <sys/utsname.h>

#include "common/error.hpp"
#include "oci/json_parse.hpp"
#include "oci/json_text.hpp"

namespace aishell::oci {

namespace mt = media_type;
using nlohmann::json;

// ---- Platform ---------------------------------------------------------------------------

namespace {
// The baseline variant of an architecture is the same as naming none (containerd's Normalize).
std::string normalized_variant(const std::string& arch, const std::string& variant) {
    if (arch == "arm64" && (variant == "v8" || variant == "8")) return "";
    if (arch == "amd64" && (variant == "v1" || variant == "1")) return "";
    return variant;
}
}  // namespace

std::string Platform::str() const {
    std::string out = os + "/" + architecture;
    if (!variant.empty()) out += "/" + variant;
    return out;
}

Platform Platform::parse(std::string_view text) {
    Platform p;
    std::vector<std::string> parts;
    std::string current;
    for (char c : text) {
        if (c == '/') {
            parts.push_back(current);
            current.clear();
        } else {
            current += c;
        }
    }
    parts.push_back(current);
    bool empty_part = false;
    for (const auto& part : parts) empty_part |= part.empty();
    if (parts.size() < 2 || parts.size() > 3 || empty_part)
        throw Error("invalid platform \"" + std::string(text) + "\"", "use os/arch[/variant], e.g. linux/arm64");
    p.os = parts[0];
    p.architecture = parts[1];
    if (parts.size() == 3) p.variant = parts[2];
    // Docker normalizes a few spellings (containerd platforms.Normalize).
    if (p.architecture == "x86_64" || p.architecture == "x86-64") p.architecture = "amd64";
    if (p.architecture == "aarch64") p.architecture = "arm64";
    p.variant = normalized_variant(p.architecture, p.variant);
    return p;
}

Platform Platform::host() {
    struct utsname u {};
    ::uname(&u);
    std::string machine = u.machine;
    Platform p{"linux", machine, "", "", {}};
    if (machine == "x86_64") p.architecture = "amd64";
    else if (machine == "aarch64" || machine == "arm64") { p.architecture = "arm64"; p.variant = "v8"; }
    else if (machine == "i386" || machine == "i686") p.architecture = "386";
    else if (machine == "armv7l") { p.architecture = "arm"; p.variant = "v7"; }
    else if (machine == "armv6l") { p.architecture = "arm"; p.variant = "v6"; }
    else if (machine == "ppc64le") p.architecture = "ppc64le";
    else if (machine == "s390x") p.architecture = "s390x";
    else if (machine == "riscv64") p.architecture = "riscv64";
    return p;
}


namespace {
// "v7" -> 7; 0 when the variant is not of that form.
int variant_number(const std::string& v) {
    if (v.size() != 2 || v[0] != 'v' || v[1] < '1' || v[1] > '9') return 0;
    return v[1] - '0';
}
}  // namespace

// The variant an arch's CPUs all implement (what naming none means), 0 when variants are not
// an ordered level for that arch.
int baseline_level(const std::string& arch) {
    if (arch == "arm64") return 8;
    if (arch == "amd64") return 1;
    return 0;
}

int platform_match_score(const Platform& wanted, const Platform& candidate) {
    if (wanted.os != candidate.os || wanted.architecture != candidate.architecture) return -1;
    const std::string& arch = wanted.architecture;
    std::string want = normalized_variant(arch, wanted.variant);
    std::string have = normalized_variant(arch, candidate.variant);
    if (want == have) return 100;
    // CPUs run older levels' code: arm v7 runs v6 and v5 (containerd's platforms.Only), arm64
    // v9 runs v8, x86-64-v3 runs v2 (psABI levels). For arm64 and amd64 naming no variant
    // means the baseline, so a host that does not know its level never gets a newer one.
    int base = baseline_level(arch);
    if (base > 0 || arch == "arm") {
        int w = want.empty() ? base : variant_number(want);
        int h = have.empty() ? base : variant_number(have);
        if (w > 0 && h > 0) return h <= w ? 10 + h : -1;
    }
    if (want.empty()) return 50;  // any variant of the architecture will do
    if (have.empty()) return 40;  // an image that does not say is taken to fit
    return -1;
}

bool platform_matches(const Platform& wanted, const Platform& candidate) {
    return platform_match_score(wanted, candidate) >= 0;
}

// ---- Descriptors -------------------------------------------------------------------------

namespace {

const json& require(const json& j, const char* key, const char* what) {
    auto it = j.find(key);
    if (it == j.end()) throw Error(std::string(what) + ": missing field \"" + key + "\"");
    return *it;
}

std::string require_string(const json& j, const char* key, const char* what) {
    const json& v = require(j, key, what);
    if (!v.is_string()) throw Error(std::string(what) + ": field \"" + key + "\" must be a string");
    return v.get<std::string>();
}

std::string optional_string(const json& j, const char* key, const char* what) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    if (!it->is_string()) throw Error(std::string(what) + ": field \"" + key + "\" must be a string");
    return it->get<std::string>();
}

std::map<std::string, std::string> string_map(const json& j, const char* key, const char* what) {
    std::map<std::string, std::string> out;
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return out;
    if (!it->is_object()) throw Error(std::string(what) + ": field \"" + key + "\" must be an object");
    for (auto& [k, v] : it->items()) {
        if (!v.is_string()) throw Error(std::string(what) + ": " + key + "[\"" + k + "\"] must be a string");
        out[k] = v.get<std::string>();
    }
    return out;
}

// RFC 6838 type/subtype, loosely: non-empty, one '/', no spaces.
bool plausible_media_type(const std::string& s) {
    auto slash = s.find('/');
    return !s.empty() && slash != std::string::npos && slash > 0 && slash + 1 < s.size() &&
           s.find(' ') == std::string::npos && s.find('/', slash + 1) == std::string::npos;
}

json parse_json_document(std::string_view bytes, std::uint64_t limit, const char* what) {
    if (bytes.size() > limit)
        throw Error(std::string(what) + " is " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                    std::to_string(limit));
    json j = parse_json_or_throw(bytes, what);
    if (!j.is_object()) throw Error(std::string(what) + " is not a JSON object");
    return j;
}

void require_schema_version_2(const json& j, const char* what) {
    const json& v = require(j, "schemaVersion", what);
    if (!v.is_number_integer() || v.get<std::int64_t>() != 2)
        throw Error(std::string(what) + ": schemaVersion must be 2");
}

// A manifest and an index open alike: the kind the caller found must be the OCI or the Docker
// one of this document, schemaVersion must be 2, and a Docker document must name its own
// mediaType (distribution's schema 2 and manifest list specs require it; OCI leaves it optional).
struct DocumentKind {
    ManifestKind oci;
    ManifestKind docker;
    std::string_view docker_media_type;
    const char* what;
};
constexpr DocumentKind kManifestDocument{ManifestKind::OciManifest, ManifestKind::DockerManifest, mt::kDockerManifest,
                                         "image manifest"};
constexpr DocumentKind kIndexDocument{ManifestKind::OciIndex, ManifestKind::DockerList, mt::kDockerList, "image index"};

// Checks the head of `bytes` as `doc`, stores its mediaType in `media_type` and returns the object.
json parse_document_head(std::string_view bytes, ManifestKind kind, const DocumentKind& doc, std::string& media_type) {
    if (kind != doc.oci && kind != doc.docker)
        throw Error(std::string("not an ") + doc.what + " (media type \"" + std::string(media_type_of(kind)) + "\")");
    json j = parse_json_document(bytes, kMaxManifestSize, doc.what);
    require_schema_version_2(j, doc.what);
    media_type = optional_string(j, "mediaType", doc.what);
    if (kind == doc.docker && media_type != doc.docker_media_type)
        throw Error(std::string(doc.what) + ": mediaType must be \"" + std::string(doc.docker_media_type) + "\"");
    return j;
}

}  // namespace

Descriptor parse_descriptor(const json& j) {
    const char* what = "descriptor";
    if (!j.is_object()) throw Error("descriptor is not a JSON object");
    Descriptor d;
    d.media_type = require_string(j, "mediaType", what);
    if (!plausible_media_type(d.media_type)) throw Error("descriptor: invalid mediaType \"" + d.media_type + "\"");
    d.digest = Digest::parse(require_string(j, "digest", what));
    const json& size = require(j, "size", what);
    if (!size.is_number_integer() || size.get<std::int64_t>() < 0)
        throw Error("descriptor " + d.digest.str() + ": size must be a non-negative integer");
    d.size = size.get<std::int64_t>();
    d.annotations = string_map(j, "annotations", what);
    if (auto it = j.find("urls"); it != j.end() && !it->is_null()) {
        if (!it->is_array()) throw Error("descriptor: urls must be an array");
        for (const auto& u : *it) {
            if (!u.is_string()) throw Error("descriptor: urls must hold strings");
            d.urls.push_back(u.get<std::string>());
        }
    }
    if (auto it = j.find("platform"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) throw Error("descriptor: platform must be an object");
        Platform p;
        p.os = require_string(*it, "os", "platform");
        p.architecture = require_string(*it, "architecture", "platform");
        p.variant = optional_string(*it, "variant", "platform");
        p.os_version = optional_string(*it, "os.version", "platform");
        if (auto f = it->find("os.features"); f != it->end() && f->is_array())
            for (const auto& feature : *f)
                if (feature.is_string()) p.os_features.push_back(feature.get<std::string>());
        d.platform = p;
    }
    std::string artifact = optional_string(j, "artifactType", what);
    if (!artifact.empty()) d.artifact_type = artifact;
    return d;
}

json descriptor_to_json(const Descriptor& d) {
    json j = {{"mediaType", d.media_type}, {"digest", d.digest.str()}, {"size", d.size}};
    if (!d.annotations.empty()) j["annotations"] = d.annotations;
    if (!d.urls.empty()) j["urls"] = d.urls;
    if (d.artifact_type) j["artifactType"] = *d.artifact_type;
    if (d.platform) {
        json p = {{"architecture", d.platform->architecture}, {"os", d.platform->os}};
        if (!d.platform->variant.empty()) p["variant"] = d.platform->variant;
        if (!d.platform->os_version.empty()) p["os.version"] = d.platform->os_version;
        if (!d.platform->os_features.empty()) p["os.features"] = d.platform->os_features;
        j["platform"] = p;
    }
    return j;
}

// ---- Manifest kinds ------------------------------------------------------------------------

namespace {
ManifestKind kind_from_media_type(std::string_view type) {
    // Content-Type may carry parameters ("; charset=utf-8").
    type = type.substr(0, type.find(';'));
    while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
    if (type == mt::kOciIndex) return ManifestKind::OciIndex;
    if (type == mt::kOciManifest) return ManifestKind::OciManifest;
    if (type == mt::kDockerList) return ManifestKind::DockerList;
    if (type == mt::kDockerManifest) return ManifestKind::DockerManifest;
    if (type == mt::kDockerSchema1 || type == mt::kDockerSchema1Signed) return ManifestKind::DockerSchema1;
    return ManifestKind::Unknown;
}
}  // namespace

ManifestKind detect_manifest_kind(std::string_view content_type, std::string_view bytes) {
    if (!bytes.empty()) {
        json j = parse_json(bytes);
        if (j.is_object()) {
            if (auto it = j.find("mediaType"); it != j.end() && it->is_string()) {
                ManifestKind k = kind_from_media_type(it->get<std::string>());
                if (k != ManifestKind::Unknown) return k;
            }
            if (auto it = j.find("schemaVersion"); it != j.end() && it->is_number_integer() && it->get<int>() == 1)
                return ManifestKind::DockerSchema1;
            ManifestKind by_header = kind_from_media_type(content_type);
            if (by_header != ManifestKind::Unknown) return by_header;
            // OCI documents may omit mediaType: decide by shape.
            if (j.contains("manifests")) return ManifestKind::OciIndex;
            if (j.contains("config") && j.contains("layers")) return ManifestKind::OciManifest;
            return ManifestKind::Unknown;
        }
    }
    return kind_from_media_type(content_type);
}

bool is_index_kind(ManifestKind kind) noexcept {
    return kind == ManifestKind::OciIndex || kind == ManifestKind::DockerList;
}

std::string_view media_type_of(ManifestKind kind) noexcept {
    switch (kind) {
    case ManifestKind::OciIndex: return mt::kOciIndex;
    case ManifestKind::OciManifest: return mt::kOciManifest;
    case ManifestKind::DockerList: return mt::kDockerList;
    case ManifestKind::DockerManifest: return mt::kDockerManifest;
    case ManifestKind::DockerSchema1: return mt::kDockerSchema1Signed;
    case ManifestKind::Unknown: break;
    }
    return {};
}

// ---- Manifest and index ----------------------------------------------------------------------

bool is_layer_media_type(std::string_view t) noexcept {
    return t == mt::kOciLayerTar || t == mt::kOciLayerGzip || t == mt::kOciLayerZstd || t == mt::kOciLayerNondistTar ||
           t == mt::kOciLayerNondistGzip || t == mt::kOciLayerNondistZstd || t == mt::kDockerLayerGzip ||
           t == mt::kDockerLayerForeignGzip;
}

mt::Compression layer_compression(std::string_view t) {
    if (t == mt::kOciLayerTar || t == mt::kOciLayerNondistTar) return mt::Compression::None;
    if (t == mt::kOciLayerGzip || t == mt::kOciLayerNondistGzip || t == mt::kDockerLayerGzip ||
        t == mt::kDockerLayerForeignGzip)
        return mt::Compression::Gzip;
    if (t == mt::kOciLayerZstd || t == mt::kOciLayerNondistZstd) return mt::Compression::Zstd;
    throw Error("unsupported layer media type \"" + std::string(t) + "\"");
}

Manifest parse_manifest(std::string_view bytes, ManifestKind kind) {
    if (kind == ManifestKind::DockerSchema1)
        throw Error("Docker image manifest schema 1 is unsupported",
                    "the registry serves a legacy format; push the image again with a current client");
    const char* what = kManifestDocument.what;
    Manifest m;
    m.kind = kind;
    const json j = parse_document_head(bytes, kind, kManifestDocument, m.media_type);
    if (kind == ManifestKind::OciManifest && !m.media_type.empty() && m.media_type != mt::kOciManifest)
        throw Error("image manifest: unexpected mediaType \"" + m.media_type + "\"");
    m.config = parse_descriptor(require(j, "config", what));
    if (m.config.size > static_cast<std::int64_t>(kMaxConfigSize))
        throw Error("image manifest: config is " + std::to_string(m.config.size) + " bytes, over the limit of " +
                    std::to_string(kMaxConfigSize));
    const json& layers = require(j, "layers", what);
    if (!layers.is_array()) throw Error("image manifest: layers must be an array");
    for (const auto& l : layers) m.layers.push_back(parse_descriptor(l));
    m.annotations = string_map(j, "annotations", what);
    return m;
}

Index parse_index(std::string_view bytes, ManifestKind kind) {
    const char* what = kIndexDocument.what;
    Index i;
    i.kind = kind;
    const json j = parse_document_head(bytes, kind, kIndexDocument, i.media_type);
    const json& manifests = require(j, "manifests", what);
    if (!manifests.is_array()) throw Error("image index: manifests must be an array");
    for (const auto& d : manifests) i.manifests.push_back(parse_descriptor(d));
    i.annotations = string_map(j, "annotations", what);
    return i;
}

std::string manifest_to_json(const Manifest& m) {
    json j = {{"schemaVersion", 2}};
    j["mediaType"] = m.media_type.empty() ? std::string(mt::kOciManifest) : m.media_type;
    j["config"] = descriptor_to_json(m.config);
    j["layers"] = json::array();
    for (const auto& l : m.layers) j["layers"].push_back(descriptor_to_json(l));
    if (!m.annotations.empty()) j["annotations"] = m.annotations;
    return json_document(j);
}

std::string index_to_json(const Index& i) {
    json j = {{"schemaVersion", 2}};
    j["mediaType"] = i.media_type.empty() ? std::string(mt::kOciIndex) : i.media_type;
    j["manifests"] = json::array();
    for (const auto& d : i.manifests) j["manifests"].push_back(descriptor_to_json(d));
    if (!i.annotations.empty()) j["annotations"] = i.annotations;
    return json_document(j);
}

// ---- Config --------------------------------------------------------------------------------

ImageConfig ImageConfig::parse(std::string_view bytes) {
    const char* what = "image config";
    nlohmann::json j = parse_json_document(bytes, kMaxConfigSize, what);
    ImageConfig c(std::move(j));
    const nlohmann::json& rootfs = require(c.json_, "rootfs", what);
    if (!rootfs.is_object() || optional_string(rootfs, "type", "rootfs") != "layers")
        throw Error("image config: rootfs.type must be \"layers\"");
    c.diff_ids();  // validates
    if (auto it = c.json_.find("config"); it != c.json_.end() && !it->is_null() && !it->is_object())
        throw Error("image config: config must be an object");
    return c;
}

Platform ImageConfig::platform() const {
    Platform p;
    p.os = json_.value("os", "");
    p.architecture = json_.value("architecture", "");
    p.variant = json_.value("variant", "");
    return p;
}

std::vector<Digest> ImageConfig::diff_ids() const {
    std::vector<Digest> out;
    auto rootfs = json_.find("rootfs");
    if (rootfs == json_.end() || !rootfs->is_object()) return out;
    auto ids = rootfs->find("diff_ids");
    if (ids == rootfs->end() || ids->is_null()) return out;
    if (!ids->is_array()) throw Error("image config: rootfs.diff_ids must be an array");
    for (const auto& id : *ids) {
        if (!id.is_string()) throw Error("image config: rootfs.diff_ids must hold strings");
        out.push_back(Digest::parse(id.get<std::string>()));
    }
    return out;
}

namespace {
const nlohmann::json* config_section(const nlohmann::json& j) {
    auto it = j.find("config");
    return it != j.end() && it->is_object() ? &*it : nullptr;
}

std::vector<std::string> string_list(const nlohmann::json& j, const char* key) {
    std::vector<std::string> out;
    const nlohmann::json* c = config_section(j);
    if (c == nullptr) return out;
    auto it = c->find(key);
    if (it == c->end() || !it->is_array()) return out;
    for (const auto& v : *it)
        if (v.is_string()) out.push_back(v.get<std::string>());
    return out;
}

std::string config_string(const nlohmann::json& j, const char* key) {
    const nlohmann::json* c = config_section(j);
    if (c == nullptr) return {};
    auto it = c->find(key);
    return it != c->end() && it->is_string() ? it->get<std::string>() : std::string();
}
}  // namespace

std::vector<std::string> ImageConfig::env() const { return string_list(json_, "Env"); }
std::vector<std::string> ImageConfig::cmd() const { return string_list(json_, "Cmd"); }
std::vector<std::string> ImageConfig::entrypoint() const { return string_list(json_, "Entrypoint"); }
std::string ImageConfig::working_dir() const { return config_string(json_, "WorkingDir"); }
std::string ImageConfig::user() const { return config_string(json_, "User"); }

std::map<std::string, std::string> ImageConfig::labels() const {
    std::map<std::string, std::string> out;
    const nlohmann::json* c = config_section(json_);
    if (c == nullptr) return out;
    auto it = c->find("Labels");
    if (it == c->end() || !it->is_object()) return out;
    for (auto& [k, v] : it->items())
        if (v.is_string()) out[k] = v.get<std::string>();
    return out;
}

std::string ImageConfig::to_json() const { return json_document(json_); }

}  // namespace aishell::oci
