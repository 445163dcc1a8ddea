// Parsing and validation of OCI index/manifest/config and Docker schema2 documents
// (oci/types.hpp): kinds, media types, digests, sizes, limits.
#include <catch2/catch.hpp>

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "oci/types.hpp"

using aishell::Error;
using nlohmann::json;
namespace oci = aishell::oci;
namespace mt = aishell::oci::media_type;
using oci::ManifestKind;

namespace {

const std::string kD1 = "sha256:" + std::string(64, '1');
const std::string kD2 = "sha256:" + std::string(64, '2');
const std::string kD3 = "sha256:" + std::string(64, '3');

json oci_manifest() {
    return json{{"schemaVersion", 2},
                {"mediaType", mt::kOciManifest},
                {"config", {{"mediaType", mt::kOciConfig}, {"digest", kD1}, {"size", 100}}},
                {"layers",
                 {{{"mediaType", mt::kOciLayerGzip}, {"digest", kD2}, {"size", 2000}},
                  {{"mediaType", mt::kOciLayerZstd}, {"digest", kD3}, {"size", 0}}}},
                {"annotations", {{"org.opencontainers.image.created", "2024-01-01T00:00:00Z"}}}};
}

json docker_manifest() {
    return json{{"schemaVersion", 2},
                {"mediaType", mt::kDockerManifest},
                {"config", {{"mediaType", mt::kDockerConfig}, {"digest", kD1}, {"size", 1469}}},
                {"layers", {{{"mediaType", mt::kDockerLayerGzip}, {"digest", kD2}, {"size", 2800000}}}}};
}

json oci_index() {
    return json{{"schemaVersion", 2},
                {"mediaType", mt::kOciIndex},
                {"manifests",
                 {{{"mediaType", mt::kOciManifest},
                   {"digest", kD1},
                   {"size", 500},
                   {"platform", {{"architecture", "amd64"}, {"os", "linux"}}}},
                  {{"mediaType", mt::kOciManifest},
                   {"digest", kD2},
                   {"size", 501},
                   {"platform", {{"architecture", "arm"}, {"os", "linux"}, {"variant", "v7"}}}}}}};
}

json docker_list() {
    json j = oci_index();
    j["mediaType"] = mt::kDockerList;
    for (auto& m : j["manifests"]) m["mediaType"] = mt::kDockerManifest;
    return j;
}

std::string message_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.message();
    }
    return "<no error>";
}

}  // namespace

TEST_CASE("types: detect_manifest_kind from body, Content-Type and shape", "[types]") {
    struct Case {
        std::string content_type, body;
        ManifestKind kind;
    };
    auto c = GENERATE(
        Case{"", oci_manifest().dump(), ManifestKind::OciManifest},
        Case{"", docker_manifest().dump(), ManifestKind::DockerManifest},
        Case{"", oci_index().dump(), ManifestKind::OciIndex},
        Case{"", docker_list().dump(), ManifestKind::DockerList},
        // The body's mediaType wins over a wrong header.
        Case{std::string(mt::kOciIndex), docker_manifest().dump(), ManifestKind::DockerManifest},
        // OCI documents may omit mediaType: the header decides, else the shape.
        Case{std::string(mt::kOciManifest) + "; charset=utf-8", R"({"schemaVersion":2,"config":{},"layers":[]})",
             ManifestKind::OciManifest},
        Case{"application/json", R"({"schemaVersion":2,"manifests":[]})", ManifestKind::OciIndex},
        Case{"", R"({"schemaVersion":2,"config":{},"layers":[]})", ManifestKind::OciManifest},
        // Schema 1, signed or not, by header or by body.
        Case{"", R"({"schemaVersion":1,"name":"library/busybox","tag":"latest","fsLayers":[]})",
             ManifestKind::DockerSchema1},
        Case{std::string(mt::kDockerSchema1Signed), "", ManifestKind::DockerSchema1},
        Case{std::string(mt::kDockerSchema1), "not json", ManifestKind::DockerSchema1},
        Case{"text/html", "<html>", ManifestKind::Unknown},
        Case{"", R"({"schemaVersion":2})", ManifestKind::Unknown},
        Case{"", "[]", ManifestKind::Unknown});
    CAPTURE(c.content_type, c.body);
    CHECK(oci::detect_manifest_kind(c.content_type, c.body) == c.kind);
}

TEST_CASE("types: media_type_of and is_index_kind", "[types]") {
    CHECK(oci::media_type_of(ManifestKind::OciIndex) == mt::kOciIndex);
    CHECK(oci::media_type_of(ManifestKind::DockerList) == mt::kDockerList);
    CHECK(oci::media_type_of(ManifestKind::OciManifest) == mt::kOciManifest);
    CHECK(oci::media_type_of(ManifestKind::DockerManifest) == mt::kDockerManifest);
    CHECK(oci::media_type_of(ManifestKind::Unknown).empty());
    CHECK(oci::is_index_kind(ManifestKind::OciIndex));
    CHECK(oci::is_index_kind(ManifestKind::DockerList));
    CHECK_FALSE(oci::is_index_kind(ManifestKind::OciManifest));
    CHECK_FALSE(oci::is_index_kind(ManifestKind::DockerManifest));
}

TEST_CASE("types: an OCI manifest parses with every field", "[types]") {
    oci::Manifest m = oci::parse_manifest(oci_manifest().dump(), ManifestKind::OciManifest);
    CHECK(m.kind == ManifestKind::OciManifest);
    CHECK(m.media_type == mt::kOciManifest);
    CHECK(m.config.media_type == mt::kOciConfig);
    CHECK(m.config.digest.str() == kD1);
    CHECK(m.config.size == 100);
    REQUIRE(m.layers.size() == 2);
    CHECK(m.layers[0].digest.str() == kD2);
    CHECK(m.layers[1].size == 0);
    CHECK(m.annotations.at("org.opencontainers.image.created") == "2024-01-01T00:00:00Z");
}

TEST_CASE("types: a Docker schema2 manifest parses", "[types]") {
    oci::Manifest m = oci::parse_manifest(docker_manifest().dump(), ManifestKind::DockerManifest);
    CHECK(m.kind == ManifestKind::DockerManifest);
    CHECK(m.config.media_type == mt::kDockerConfig);
    REQUIRE(m.layers.size() == 1);
    CHECK(oci::layer_compression(m.layers[0].media_type) == mt::Compression::Gzip);
}

TEST_CASE("types: an OCI manifest without mediaType is accepted (the field is optional)", "[types]") {
    json j = oci_manifest();
    j.erase("mediaType");
    CHECK(oci::parse_manifest(j.dump(), ManifestKind::OciManifest).media_type.empty());
}

TEST_CASE("types: bad manifests are refused naming the problem", "[types]") {
    struct Case {
        std::string name;
        std::function<void(json&)> mutate;
        ManifestKind kind;
        std::string error;
    };
    auto c = GENERATE(
        Case{"schemaVersion 1", [](json& j) { j["schemaVersion"] = 1; }, ManifestKind::OciManifest,
             "image manifest: schemaVersion must be 2"},
        Case{"schemaVersion string", [](json& j) { j["schemaVersion"] = "2"; }, ManifestKind::OciManifest,
             "image manifest: schemaVersion must be 2"},
        Case{"no schemaVersion", [](json& j) { j.erase("schemaVersion"); }, ManifestKind::OciManifest,
             "image manifest: missing field \"schemaVersion\""},
        Case{"index media type in a manifest", [](json& j) { j["mediaType"] = mt::kOciIndex; },
             ManifestKind::OciManifest,
             "image manifest: unexpected mediaType \"application/vnd.oci.image.index.v1+json\""},
        Case{"docker manifest without mediaType", [](json& j) { j.erase("mediaType"); }, ManifestKind::DockerManifest,
             "image manifest: mediaType must be \"application/vnd.docker.distribution.manifest.v2+json\""},
        Case{"no config", [](json& j) { j.erase("config"); }, ManifestKind::OciManifest,
             "image manifest: missing field \"config\""},
        Case{"layers not an array", [](json& j) { j["layers"] = json::object(); }, ManifestKind::OciManifest,
             "image manifest: layers must be an array"},
        Case{"no layers", [](json& j) { j.erase("layers"); }, ManifestKind::OciManifest,
             "image manifest: missing field \"layers\""},
        Case{"negative layer size", [](json& j) { j["layers"][0]["size"] = -1; }, ManifestKind::OciManifest,
             "descriptor " + kD2 + ": size must be a non-negative integer"},
        Case{"fractional size", [](json& j) { j["layers"][0]["size"] = 1.5; }, ManifestKind::OciManifest,
             "descriptor " + kD2 + ": size must be a non-negative integer"},
        Case{"size as string", [](json& j) { j["config"]["size"] = "100"; }, ManifestKind::OciManifest,
             "descriptor " + kD1 + ": size must be a non-negative integer"},
        Case{"missing size", [](json& j) { j["config"].erase("size"); }, ManifestKind::OciManifest,
             "descriptor: missing field \"size\""},
        Case{"bad layer digest", [](json& j) { j["layers"][0]["digest"] = "sha256:xyz"; },
             ManifestKind::OciManifest, "invalid digest \"sha256:xyz\": sha256 needs 64 lowercase hex digits"},
        Case{"digest not a string", [](json& j) { j["config"]["digest"] = 5; }, ManifestKind::OciManifest,
             "descriptor: field \"digest\" must be a string"},
        Case{"media type without slash", [](json& j) { j["layers"][0]["mediaType"] = "tar"; },
             ManifestKind::OciManifest, "descriptor: invalid mediaType \"tar\""},
        Case{"config over 8 MiB", [](json& j) { j["config"]["size"] = 8 * 1024 * 1024 + 1; },
             ManifestKind::OciManifest, "image manifest: config is 8388609 bytes, over the limit of 8388608"},
        Case{"annotation not a string", [](json& j) { j["annotations"]["x"] = 1; }, ManifestKind::OciManifest,
             "image manifest: annotations[\"x\"] must be a string"},
        Case{"platform not an object", [](json& j) { j["config"]["platform"] = "linux/amd64"; },
             ManifestKind::OciManifest, "descriptor: platform must be an object"});
    CAPTURE(c.name);
    json j = c.kind == ManifestKind::DockerManifest ? docker_manifest() : oci_manifest();
    c.mutate(j);
    CHECK(message_of([&] { oci::parse_manifest(j.dump(), c.kind); }) == c.error);
}

TEST_CASE("types: documents that are not JSON objects are refused", "[types]") {
    CHECK(message_of([] { oci::parse_manifest("{not json", ManifestKind::OciManifest); }) ==
          "image manifest is not valid JSON");
    CHECK(message_of([] { oci::parse_manifest("[1,2]", ManifestKind::OciManifest); }) ==
          "image manifest is not a JSON object");
    CHECK(message_of([] { oci::parse_index("", ManifestKind::OciIndex); }) == "image index is not valid JSON");
    CHECK(message_of([] { oci::parse_manifest(R"({"schemaVersion":2,"config":[],"layers":[]})",
                                              ManifestKind::OciManifest); }) ==
          "descriptor is not a JSON object");
}

TEST_CASE("types: schema 1 is detected and refused as unsupported with a hint", "[types]") {
    std::string body = R"({"schemaVersion":1,"name":"x","tag":"y","fsLayers":[],"history":[]})";
    ManifestKind kind = oci::detect_manifest_kind(mt::kDockerSchema1Signed, body);
    REQUIRE(kind == ManifestKind::DockerSchema1);
    try {
        oci::parse_manifest(body, kind);
        FAIL("schema 1 accepted");
    } catch (const Error& e) {
        CHECK(e.message() == "Docker image manifest schema 1 is unsupported");
        CHECK_FALSE(e.hint().empty());
    }
}

TEST_CASE("types: the wrong parser for a kind is refused", "[types]") {
    CHECK(message_of([] { oci::parse_manifest(oci_index().dump(), ManifestKind::OciIndex); }) ==
          "not an image manifest (media type \"application/vnd.oci.image.index.v1+json\")");
    CHECK(message_of([] { oci::parse_index(oci_manifest().dump(), ManifestKind::OciManifest); }) ==
          "not an image index (media type \"application/vnd.oci.image.manifest.v1+json\")");
    CHECK(message_of([] { oci::parse_manifest("{}", ManifestKind::Unknown); }) ==
          "not an image manifest (media type \"\")");
}

TEST_CASE("types: oversize documents are refused before parsing", "[types]") {
    json j = oci_manifest();
    j["annotations"]["padding"] = std::string(oci::kMaxManifestSize, 'x');
    CHECK_THAT(message_of([&] { oci::parse_manifest(j.dump(), ManifestKind::OciManifest); }),
               Catch::StartsWith("image manifest is ") && Catch::EndsWith("bytes, over the limit of 4194304"));
    json i = oci_index();
    i["annotations"]["padding"] = std::string(oci::kMaxManifestSize, 'x');
    CHECK_THAT(message_of([&] { oci::parse_index(i.dump(), ManifestKind::OciIndex); }),
               Catch::EndsWith("over the limit of 4194304"));
    // Exactly at the limit is fine as far as size goes.
    std::string at_limit = oci_manifest().dump();
    at_limit += std::string(oci::kMaxManifestSize - at_limit.size(), ' ');
    CHECK_NOTHROW(oci::parse_manifest(at_limit, ManifestKind::OciManifest));

    json config = {{"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}},
                   {"pad", std::string(oci::kMaxConfigSize, 'x')}};
    CHECK_THAT(message_of([&] { oci::ImageConfig::parse(config.dump()); }),
               Catch::EndsWith("over the limit of 8388608"));
}

TEST_CASE("types: Docker manifest list vs OCI index", "[types]") {
    oci::Index list = oci::parse_index(docker_list().dump(), ManifestKind::DockerList);
    CHECK(list.kind == ManifestKind::DockerList);
    CHECK(list.media_type == mt::kDockerList);
    REQUIRE(list.manifests.size() == 2);
    CHECK(list.manifests[0].media_type == mt::kDockerManifest);

    oci::Index index = oci::parse_index(oci_index().dump(), ManifestKind::OciIndex);
    CHECK(index.kind == ManifestKind::OciIndex);
    REQUIRE(index.manifests.size() == 2);
    REQUIRE(index.manifests[1].platform.has_value());
    CHECK(index.manifests[1].platform->str() == "linux/arm/v7");
    CHECK(index.manifests[0].platform->str() == "linux/amd64");

    // A list must say it is a list; an OCI index may omit mediaType.
    json no_type = docker_list();
    no_type.erase("mediaType");
    CHECK(message_of([&] { oci::parse_index(no_type.dump(), ManifestKind::DockerList); }) ==
          "image index: mediaType must be \"application/vnd.docker.distribution.manifest.list.v2+json\"");
    json oci_no_type = oci_index();
    oci_no_type.erase("mediaType");
    CHECK_NOTHROW(oci::parse_index(oci_no_type.dump(), ManifestKind::OciIndex));

    json bad = oci_index();
    bad["manifests"][0]["platform"].erase("os");
    CHECK(message_of([&] { oci::parse_index(bad.dump(), ManifestKind::OciIndex); }) ==
          "platform: missing field \"os\"");
    json not_array = oci_index();
    not_array["manifests"] = "none";
    CHECK(message_of([&] { oci::parse_index(not_array.dump(), ManifestKind::OciIndex); }) ==
          "image index: manifests must be an array");
}

TEST_CASE("types: descriptors round trip through JSON", "[types]") {
    json j = {{"mediaType", mt::kOciManifest},
              {"digest", kD1},
              {"size", 42},
              {"annotations", {{"org.opencontainers.image.ref.name", "aishell:base"}}},
              {"urls", {"https://example.com/blob"}},
              {"artifactType", "application/vnd.example+json"},
              {"platform",
               {{"architecture", "arm64"}, {"os", "linux"}, {"variant", "v8"}, {"os.features", {"sse4"}}}}};
    oci::Descriptor d = oci::parse_descriptor(j);
    CHECK(d.platform->variant == "v8");  // descriptors are kept verbatim, not normalized
    CHECK(oci::descriptor_to_json(d) == j);
}

TEST_CASE("types: manifests aishell writes use OCI media types and parse back", "[types]") {
    oci::Manifest m = oci::parse_manifest(oci_manifest().dump(), ManifestKind::OciManifest);
    m.media_type.clear();
    std::string text = oci::manifest_to_json(m);
    CHECK(oci::detect_manifest_kind("", text) == ManifestKind::OciManifest);
    oci::Manifest back = oci::parse_manifest(text, ManifestKind::OciManifest);
    CHECK(back.media_type == mt::kOciManifest);
    CHECK(back.layers.size() == 2);
    CHECK(back.config.digest == m.config.digest);

    oci::Index i = oci::parse_index(oci_index().dump(), ManifestKind::OciIndex);
    std::string itext = oci::index_to_json(i);
    CHECK(oci::parse_index(itext, ManifestKind::OciIndex).manifests.size() == 2);
}

TEST_CASE("types: layer compression by media type", "[types]") {
    struct Case {
        std::string_view type;
        mt::Compression compression;
    };
    auto c = GENERATE(Case{mt::kOciLayerTar, mt::Compression::None}, Case{mt::kOciLayerGzip, mt::Compression::Gzip},
                      Case{mt::kOciLayerZstd, mt::Compression::Zstd},
                      Case{mt::kOciLayerNondistTar, mt::Compression::None},
                      Case{mt::kOciLayerNondistGzip, mt::Compression::Gzip},
                      Case{mt::kOciLayerNondistZstd, mt::Compression::Zstd},
                      Case{mt::kDockerLayerGzip, mt::Compression::Gzip},
                      Case{mt::kDockerLayerForeignGzip, mt::Compression::Gzip});
    CAPTURE(c.type);
    CHECK(oci::is_layer_media_type(c.type));
    CHECK(oci::layer_compression(c.type) == c.compression);
}

TEST_CASE("types: unknown layer media types are refused", "[types]") {
    auto type = GENERATE(std::string(mt::kOciConfig), std::string("application/vnd.oci.image.layer.v1.tar+bzip2"),
                         std::string("application/octet-stream"), std::string(""));
    CAPTURE(type);
    CHECK_FALSE(oci::is_layer_media_type(type));
    CHECK(message_of([&] { oci::layer_compression(type); }) == "unsupported layer media type \"" + type + "\"");
}

TEST_CASE("types: image config accessors and validation", "[types]") {
    json j = {{"architecture", "arm"},
              {"os", "linux"},
              {"variant", "v7"},
              {"config",
               {{"Env", {"PATH=/usr/bin", "A=1"}},
                {"Cmd", {"/bin/sh"}},
                {"Entrypoint", {"/init"}},
                {"WorkingDir", "/work"},
                {"User", "1000:1000"},
                {"Labels", {{"aishell.base.id", "x"}}}}},
              {"rootfs", {{"type", "layers"}, {"diff_ids", {kD1, kD2}}}},
              {"history", {{{"created_by", "RUN true"}}}}};
    oci::ImageConfig c = oci::ImageConfig::parse(j.dump());
    CHECK(c.platform().str() == "linux/arm/v7");
    REQUIRE(c.diff_ids().size() == 2);
    CHECK(c.diff_ids()[1].str() == kD2);
    CHECK(c.env() == std::vector<std::string>{"PATH=/usr/bin", "A=1"});
    CHECK(c.cmd() == std::vector<std::string>{"/bin/sh"});
    CHECK(c.entrypoint() == std::vector<std::string>{"/init"});
    CHECK(c.working_dir() == "/work");
    CHECK(c.user() == "1000:1000");
    CHECK(c.labels().at("aishell.base.id") == "x");
    // Unknown fields survive a round trip.
    CHECK(json::parse(c.to_json()) == j);

    json no_config = {{"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}}};
    oci::ImageConfig empty = oci::ImageConfig::parse(no_config.dump());
    CHECK(empty.cmd().empty());
    CHECK(empty.working_dir().empty());
    CHECK(empty.labels().empty());
}

TEST_CASE("types: bad image configs are refused", "[types]") {
    struct Case {
        std::string name, body, error;
    };
    auto c = GENERATE(
        Case{"no rootfs", R"({"os":"linux"})", "image config: missing field \"rootfs\""},
        Case{"wrong rootfs type", R"({"rootfs":{"type":"squashfs","diff_ids":[]}})",
             "image config: rootfs.type must be \"layers\""},
        Case{"diff_ids not array", R"({"rootfs":{"type":"layers","diff_ids":"x"}})",
             "image config: rootfs.diff_ids must be an array"},
        Case{"bad diff_id", R"({"rootfs":{"type":"layers","diff_ids":["sha256:00"]}})",
             "invalid digest \"sha256:00\": sha256 needs 64 lowercase hex digits"},
        Case{"config not object", R"({"rootfs":{"type":"layers","diff_ids":[]},"config":[]})",
             "image config: config must be an object"});
    CAPTURE(c.name);
    CHECK(message_of([&] { oci::ImageConfig::parse(c.body); }) == c.error);
}
