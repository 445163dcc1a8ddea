// JSON text out of aishell (oci/json_text.hpp): documents replace what is not UTF-8, as Go's
// encoding/json does; step texts and messages keep every byte.
#include <catch2/catch.hpp>

#include "oci/json_text.hpp"

using nlohmann::json;
using namespace aishell::oci;

TEST_CASE("json text: a document replaces each invalid UTF-8 sequence with U+FFFD", "[json_text]") {
    json config = {{"Labels", {{"author", "Jos\xe9"}}}, {"Cmd", {"echo", "caf\xc3\xa9", "ov\xc0\xaf"}}};
    CHECK_THROWS(config.dump());  // what aishell did: "[json.exception.type_error.316] incomplete UTF-8 string"
    CHECK(json_document(config) ==
          "{\"Cmd\":[\"echo\",\"caf\xc3\xa9\",\"ov\xef\xbf\xbd\xef\xbf\xbd\"],\"Labels\":{\"author\":\"Jos\xef\xbf\xbd\"}}");
    CHECK(json_document(json{{"k", "v"}}, 2) == "{\n  \"k\": \"v\"\n}");
    CHECK(json_document(json{{"k", "v"}}, 1, '\t') == "{\n\t\"k\": \"v\"\n}");
    // The result is UTF-8 and parses again.
    CHECK(json::parse(json_document(config))["Labels"]["author"] == "Jos\xef\xbf\xbd");
}

TEST_CASE("json text: a step's text is dump()'s text, with the bytes of strings that are not UTF-8", "[json_text]") {
    // Every escape nlohmann's serializer makes, non-ASCII UTF-8, numbers, nesting: the same
    // text as before, so cache keys of UTF-8 steps do not change.
    json valid = {{"type", "cache"},     {"target", "/x \"q\" \\ /"}, {"ctl", std::string("\b\f\n\r\t\x01\x1f\x7f", 8)},
                  {"utf8", "F\xc5\x91 \xe6\x97\xa5"}, {"n", -12},     {"f", 1.5},
                  {"b", true},           {"z", nullptr},              {"a", json::array({json::object(), json::array()})}};
    CHECK(json_key_text(valid) == valid.dump());
    CHECK(json_key_text(json::array({"sh", "-c", "echo hi"})) == "[\"sh\",\"-c\",\"echo hi\"]");
    // Not UTF-8: the bytes stay, so two such steps never share a key.
    CHECK(json_key_text(json::array({"echo", "caf\xe9"})) == "[\"echo\",\"caf\xe9\"]");
    CHECK(json_key_text(json::array({"echo", "caf\xe8"})) != json_key_text(json::array({"echo", "caf\xe9"})));
}

TEST_CASE("json text: messages between aishell's processes carry every byte", "[json_text]") {
    json spec = {{"argv", {"/bin/sh", "-c", "echo caf\xe9 > /f"}}, {"env", {"A=\xff\xfe"}}, {"n", 3}};
    json back = from_message(to_message(spec));
    CHECK(back == spec);
    CHECK(back["argv"][2].get<std::string>() == "echo caf\xe9 > /f");
    CHECK(from_message("\xc1").is_discarded());
    CHECK(from_message("").is_discarded());
}
