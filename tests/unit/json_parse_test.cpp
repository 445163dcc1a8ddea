// The one JSON parser (oci/json_parse.hpp): documents nested deeper than kMaxJsonDepth are
// refused before nlohmann builds them, so no copy of a parsed value can exhaust the stack.
#include <catch2/catch.hpp>

#include <string>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "error_message.hpp"
#include "oci/image.hpp"
#include "oci/json_parse.hpp"
#include "oci/types.hpp"

namespace oci = aishell::oci;
using aishell::test::message_of;

namespace {

std::string nested(std::size_t depth, const std::string& inner = "1") {
    return std::string(depth, '[') + inner + std::string(depth, ']');
}

}  // namespace

TEST_CASE("json: nesting up to the limit parses, one level more is refused", "[json]") {
    CHECK(oci::json_too_deep_at(nested(oci::kMaxJsonDepth)) == std::nullopt);
    CHECK(oci::parse_json(nested(oci::kMaxJsonDepth)).is_array());
    CHECK(oci::json_too_deep_at(nested(oci::kMaxJsonDepth + 1)) == oci::kMaxJsonDepth);
    CHECK(oci::parse_json(nested(oci::kMaxJsonDepth + 1)).is_discarded());
    std::string objects;
    for (std::size_t i = 0; i <= oci::kMaxJsonDepth; ++i) objects += "{\"a\":";
    objects += "1" + std::string(oci::kMaxJsonDepth + 1, '}');
    CHECK(oci::parse_json(objects).is_discarded());
    CHECK(oci::json_too_deep_at(objects, oci::kMaxJsonDepth + 1) == std::nullopt);
}

TEST_CASE("json: brackets inside strings and escapes do not count", "[json]") {
    std::string deep_text = "[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"]";
    CHECK(oci::json_too_deep_at(deep_text) == std::nullopt);
    CHECK(oci::parse_json(deep_text).is_array());
    // Siblings close before the next opens: depth is the maximum, not the count.
    std::string wide = "[";
    for (int i = 0; i < 5000; ++i) wide += std::string(i ? "," : "") + "[[1]]";
    wide += "]";
    CHECK(oci::parse_json(wide).size() == 5000);
}

TEST_CASE("json: a 300,000 deep document is an error, not a crash", "[json]") {
    // The object is level 1; the 256th '[' (byte 46 + 255) is level 257.
    std::string doc = "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]},\"x\":" + nested(300000) + "}";
    CHECK(message_of([&] { (void)oci::parse_json_or_throw(doc, "image config"); }) ==
          "image config is not valid JSON: nested deeper than 256 levels (at byte 301)");
    CHECK(message_of([&] { (void)oci::ImageConfig::parse(doc); }) ==
          "image config is not valid JSON: nested deeper than 256 levels (at byte 301)");
    std::string manifest = "{\"schemaVersion\":2,\"annotations\":" + nested(100000) + "}";
    CHECK_THROWS_WITH(oci::parse_manifest(manifest, oci::ManifestKind::OciManifest),
                      Catch::StartsWith("image manifest is not valid JSON: nested deeper than 256 levels"));
    CHECK_THROWS_WITH(oci::parse_index(manifest, oci::ManifestKind::OciIndex),
                      Catch::StartsWith("image index is not valid JSON: nested deeper than 256 levels"));
    CHECK(oci::detect_manifest_kind("", manifest) == oci::ManifestKind::Unknown);
}

TEST_CASE("json: invalid JSON keeps its plain message", "[json]") {
    CHECK(message_of([] { (void)oci::parse_json_or_throw("{\"a\":", "meta"); }) == "meta is not valid JSON");
    CHECK(oci::parse_json("").is_discarded());
    CHECK(oci::parse_json("{} x").is_discarded());
}

TEST_CASE("image config: diff_ids must be digests, one per layer", "[json][image]") {
    oci::Manifest m;
    m.layers.resize(2);
    auto config = [](const std::string& ids) {
        return "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[" + ids + "]}}";
    };
    std::string d1 = "\"sha256:" + std::string(64, 'a') + "\"";
    CHECK(oci::parse_image_config(m, config(d1 + "," + d1)).diff_ids().size() == 2);
    CHECK(message_of([&] { (void)oci::parse_image_config(m, config(d1)); }) ==
          "config has 1 diff_ids but the manifest has 2 layers");
    CHECK(message_of([&] { (void)oci::parse_image_config(m, config("\"sha256:../../../../tmp/x\"," + d1)); }) ==
          "invalid digest \"sha256:../../../../tmp/x\": invalid encoded part");
}
