// Registry auth pieces that need no network: WWW-Authenticate challenges, base64, auth files
// in Docker's and podman's format, and the redaction --debug relies on.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "registry/auth.hpp"
#include "registry/http.hpp"

namespace fs = std::filesystem;
using namespace aishell::registry;

TEST_CASE("www-authenticate: a Bearer challenge as distribution sends it", "[auth]") {
    auto challenges = parse_www_authenticate(
        R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:lib/app:pull")");
    REQUIRE(challenges.size() == 1);
    CHECK(challenges[0].scheme == "bearer");
    CHECK(challenges[0].param("realm") == "https://auth.example/token");
    CHECK(challenges[0].param("service") == "registry.example");
    CHECK(challenges[0].param("scope") == "repository:lib/app:pull");
    CHECK(challenges[0].param("error").empty());
}

TEST_CASE("www-authenticate: Basic, case-insensitive names, spaces, escapes and several challenges", "[auth]") {
    auto basic = parse_www_authenticate(R"(Basic realm="Registry Realm")");
    REQUIRE(basic.size() == 1);
    CHECK(basic[0].scheme == "basic");
    CHECK(basic[0].param("realm") == "Registry Realm");

    auto mixed = parse_www_authenticate(
        R"(BEARER Realm = "https://a/t?x=1,y" , Service=svc, Scope="repository:a:pull repository:b:pull", Basic realm="r\"q")");
    REQUIRE(mixed.size() == 2);
    CHECK(mixed[0].scheme == "bearer");
    CHECK(mixed[0].param("realm") == "https://a/t?x=1,y");  // a comma inside quotes is data
    CHECK(mixed[0].param("service") == "svc");
    CHECK(mixed[0].param("scope") == "repository:a:pull repository:b:pull");
    CHECK(mixed[1].scheme == "basic");
    CHECK(mixed[1].param("realm") == "r\"q");

    auto with_error = parse_www_authenticate(
        R"(Bearer realm="https://a/t",error="insufficient_scope",scope="repository:x:pull")");
    REQUIRE(with_error.size() == 1);
    CHECK(with_error[0].param("error") == "insufficient_scope");
}

TEST_CASE("www-authenticate: garbage gives no challenge and never throws", "[auth]") {
    for (const char* junk : {"", ",,,", "\"unterminated", "=", "Bearer realm=\"unterminated", "   "}) {
        INFO(junk);
        CHECK_NOTHROW(parse_www_authenticate(junk));
    }
    CHECK(parse_www_authenticate("").empty());
    CHECK(parse_www_authenticate(",,,").empty());
}

TEST_CASE("base64 round trip and rejection of malformed text", "[auth]") {
    CHECK(base64_encode("") == "");
    CHECK(base64_encode("f") == "Zg==");
    CHECK(base64_encode("fo") == "Zm8=");
    CHECK(base64_encode("foo") == "Zm9v");
    CHECK(base64_encode("user:pa:ss") == "dXNlcjpwYTpzcw==");
    CHECK(base64_decode("dXNlcjpwYTpzcw==") == std::optional<std::string>("user:pa:ss"));
    CHECK(base64_decode("Zm9v") == std::optional<std::string>("foo"));
    CHECK_FALSE(base64_decode("Zm9v!"));
    CHECK_FALSE(base64_decode("Z"));  // no length decodes to a lone sextet
}

TEST_CASE("auth files: keys as Docker and podman write them", "[auth]") {
    CHECK(auth_key_matches("127.0.0.1:5000", "127.0.0.1:5000"));
    CHECK(auth_key_matches("https://127.0.0.1:5000", "127.0.0.1:5000"));
    CHECK(auth_key_matches("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"));
    CHECK_FALSE(auth_key_matches("127.0.0.1:5001", "127.0.0.1:5000"));
    CHECK_FALSE(auth_key_matches("127.0.0.1", "127.0.0.1:5000"));
    CHECK(auth_key_matches("https://index.docker.io/v1/", "docker.io"));
    CHECK(auth_key_matches("docker.io", "docker.io"));
    CHECK_FALSE(auth_key_matches("quay.io", "docker.io"));
}

TEST_CASE("auth files: credentials come from the auth entry, a malformed one is an error", "[auth]") {
    std::string json = R"({"auths":{"https://index.docker.io/v1/":{"auth":")" + base64_encode("hub:secret") +
                       R"("},"127.0.0.1:5000":{"auth":")" + base64_encode("alice:p:w") + R"("}},"credsStore":"x"})";
    auto hub = credentials_from_auth_json(json, "docker.io");
    REQUIRE(hub);
    CHECK(hub->username == "hub");
    CHECK(hub->password == "secret");
    auto local = credentials_from_auth_json(json, "127.0.0.1:5000");
    REQUIRE(local);
    CHECK(local->username == "alice");
    CHECK(local->password == "p:w");  // only the first ':' separates
    CHECK_FALSE(credentials_from_auth_json(json, "127.0.0.1:5001"));
    CHECK_FALSE(credentials_from_auth_json("{}", "docker.io"));
    CHECK_THROWS_AS(credentials_from_auth_json("{not json", "docker.io"), aishell::Error);
    CHECK_THROWS_AS(credentials_from_auth_json(R"({"auths":{"docker.io":{"auth":"!!"}}})", "docker.io"),
                    aishell::Error);
}

TEST_CASE("auth files: login adds, logout removes, other entries and keys survive, mode 0600", "[auth]") {
    auto dir = fs::temp_directory_path() / ("aishell-auth-" + aishell::random_hex(6));
    fs::create_directories(dir);
    auto path = dir / "sub" / "config.json";
    fs::create_directories(path.parent_path());
    aishell::write_file_atomic(path, R"({"auths":{"other:1":{"auth":"b3RoZXI6eA=="}},"credHelpers":{"x":"y"}})");

    CHECK(update_auth_file(path, "127.0.0.1:5000", Credentials{"bob", "hunter2"}));
    auto text = aishell::read_file(path);
    auto json = nlohmann::json::parse(text);
    CHECK(json["auths"]["127.0.0.1:5000"]["auth"] == base64_encode("bob:hunter2"));
    CHECK(json["auths"]["other:1"]["auth"] == "b3RoZXI6eA==");
    CHECK(json["credHelpers"]["x"] == "y");
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    CHECK(update_auth_file(path, "127.0.0.1:5000", std::nullopt));
    json = nlohmann::json::parse(aishell::read_file(path));
    CHECK_FALSE(json["auths"].contains("127.0.0.1:5000"));
    CHECK(json["auths"].contains("other:1"));
    CHECK_FALSE(update_auth_file(path, "127.0.0.1:5000", std::nullopt));  // nothing to remove

    // A file that does not exist yet is created, with its directory.
    auto fresh = dir / "new" / "auth.json";
    CHECK(update_auth_file(fresh, "h:1", Credentials{"u", "p"}));
    CHECK(credentials_from_auth_json(aishell::read_file(fresh), "h:1")->password == "p");
    fs::remove_all(dir);
}

TEST_CASE("redaction: credentials and tokens never reach the debug log", "[auth]") {
    CHECK(redact_header("authorization", "Bearer eyJhbGciOi.secret.sig") == "Bearer <redacted>");
    CHECK(redact_header("authorization", "Basic dXNlcjpwYXNz") == "Basic <redacted>");
    CHECK(redact_header("cookie", "session=abc") == "<redacted>");
    CHECK(redact_header("content-type", "application/json") == "application/json");
    auto url = redact_url("https://auth.example/token?service=reg&scope=repository:a:pull&token=SECRET&password=PW");
    CHECK(url.find("SECRET") == std::string::npos);
    CHECK(url.find("PW") == std::string::npos);
    CHECK(url.find("service=reg") != std::string::npos);
}
