// Typed views of OCI image index/manifest/config and Docker schema2 manifest/list, parsed with
// nlohmann_json and validated (media types, digest syntax, sizes). Parsing never re-serializes:
// the bytes a manifest was parsed from stay the stored bytes and its identity.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "oci/digest.hpp"
#include "oci/media_types.hpp"

namespace aishell::oci {

inline constexpr std::uint64_t kMaxManifestSize = 4 * 1024 * 1024;  // as containerd and distribution
inline constexpr std::uint64_t kMaxConfigSize = 8 * 1024 * 1024;

inline constexpr std::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";

struct Platform {
    std::string os;
    std::string architecture;
    std::string variant;
    std::string os_version;
    std::vector<std::string> os_features;

    // "linux/arm64/v8"; parse accepts os/arch[/variant].
    std::string str() const;
    static Platform parse(std::string_view text);  // throws Error
    // The platform this binary runs on (uname machine mapped to GOARCH names, arm variant).
    static Platform host();
    friend bool operator==(const Platform&, const Platform&) = default;
};

// True when candidate can run where wanted asks: os and architecture equal, and the variant
// equal, or an older level the wanted CPU also runs (arm v7 runs v6/v5, arm64 v9 runs v8,
// amd64 v3 runs v2; for arm64 and amd64 no variant means the baseline v8 / v1), or, for other
// arches, wanted or candidate names no variant.
bool platform_matches(const Platform& wanted, const Platform& candidate);
// How well candidate fits wanted: -1 no match; higher is better (exact variant first, then
// any variant, then an unspecified one, then older levels, newest first). Pick the maximum.
int platform_match_score(const Platform& wanted, const Platform& candidate);

struct Descriptor {
    std::string media_type;
    Digest digest;
    std::int64_t size = 0;
    std::optional<Platform> platform;
    std::map<std::string, std::string> annotations;
    std::vector<std::string> urls;
    std::optional<std::string> artifact_type;
};

enum class ManifestKind { OciIndex, OciManifest, DockerList, DockerManifest, DockerSchema1, Unknown };

// Decides what a manifest document is from the Content-Type it was served with (may be empty)
// and its mediaType / schemaVersion / shape.
ManifestKind detect_manifest_kind(std::string_view content_type, std::string_view bytes);
bool is_index_kind(ManifestKind kind) noexcept;
std::string_view media_type_of(ManifestKind kind) noexcept;

// An image manifest: OCI manifest or Docker schema2 (kind says which).
struct Manifest {
    ManifestKind kind = ManifestKind::OciManifest;
    std::string media_type;  // as written in the document (may be empty for OCI)
    Descriptor config;
    std::vector<Descriptor> layers;
    std::map<std::string, std::string> annotations;
};

// An image index: OCI index or Docker manifest list.
struct Index {
    ManifestKind kind = ManifestKind::OciIndex;
    std::string media_type;
    std::vector<Descriptor> manifests;
    std::map<std::string, std::string> annotations;
};

// Parse and validate; throw Error naming the field that is wrong. Size limits are enforced.
Manifest parse_manifest(std::string_view bytes, ManifestKind kind);
Index parse_index(std::string_view bytes, ManifestKind kind);
Descriptor parse_descriptor(const nlohmann::json& j);  // throws Error

nlohmann::json descriptor_to_json(const Descriptor& d);
// Serializations used for images aishell writes (OCI media types).
std::string manifest_to_json(const Manifest& m);
std::string index_to_json(const Index& i);

// Layer compression from a layer media type; throws Error for types aishell cannot unpack.
media_type::Compression layer_compression(std::string_view layer_media_type);
bool is_layer_media_type(std::string_view media_type) noexcept;

// Image configuration. Kept as JSON so fields aishell does not know survive a round trip;
// accessors read the ones it uses.
class ImageConfig {
public:
    static ImageConfig parse(std::string_view bytes);  // validates rootfs.type and diff_ids
    ImageConfig() = default;
    explicit ImageConfig(nlohmann::json j) : json_(std::move(j)) {}

    Platform platform() const;
    std::vector<Digest> diff_ids() const;
    const nlohmann::json& json() const noexcept { return json_; }
    nlohmann::json& json() noexcept { return json_; }
    // The "config" object's fields (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ...).
    std::vector<std::string> env() const;
    std::vector<std::string> cmd() const;
    std::vector<std::string> entrypoint() const;
    std::string working_dir() const;
    std::string user() const;
    std::map<std::string, std::string> labels() const;
    std::string to_json() const;  // compact, for a new blob

private:
    nlohmann::json json_ = nlohmann::json::object();
};

}  // namespace aishell::oci
