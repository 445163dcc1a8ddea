// The pure parts of a push: which upload method a blob gets, URLs of an upload session (a
// Location relative or absolute, query parameters added), the Range a registry answers a
// PATCH with, the choice of a mount source, and the store's per-blob source records.
#include <catch2/catch.hpp>

#include "cli/format.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/blob_sources.hpp"
#include "oci/store.hpp"
#include "registry/push.hpp"
#include "registry/reference.hpp"
#include "temp_dir.hpp"

using namespace aishell;
using namespace aishell::registry;

TEST_CASE("small blobs go in one PUT, large ones streamed, chunks only when asked", "[push]") {
    CHECK(choose_upload_method(0, 0) == UploadMethod::Monolithic);
    CHECK(choose_upload_method(kMonolithicUploadMax, 0) == UploadMethod::Monolithic);
    CHECK(choose_upload_method(kMonolithicUploadMax + 1, 0) == UploadMethod::Streamed);
    // --chunk-size: a blob larger than one chunk is chunked, whatever its size.
    CHECK(choose_upload_method(1000, 100) == UploadMethod::Chunked);
    CHECK(choose_upload_method(kMonolithicUploadMax * 8, 1024 * 1024) == UploadMethod::Chunked);
    // One chunk or less: no Content-Range needed.
    CHECK(choose_upload_method(100, 100) == UploadMethod::Monolithic);
    CHECK(choose_upload_method(kMonolithicUploadMax + 1, kMonolithicUploadMax * 2) == UploadMethod::Streamed);
}

TEST_CASE("an upload's Location is resolved against the URL that answered", "[push]") {
    const std::string answered = "https://reg:5000/v2/team/app/blobs/uploads/";
    // distribution: an absolute path
    CHECK(upload_location(answered, "/v2/team/app/blobs/uploads/u1?_state=abc") ==
          "https://reg:5000/v2/team/app/blobs/uploads/u1?_state=abc");
    // absolute URL, possibly another host (object storage)
    CHECK(upload_location(answered, "https://blobs.example.com/up/u2?sig=x") == "https://blobs.example.com/up/u2?sig=x");
    // relative to the answered path's directory
    CHECK(upload_location(answered, "u3") == "https://reg:5000/v2/team/app/blobs/uploads/u3");
    CHECK(upload_location("https://reg:5000/v2/team/app/blobs/uploads/u1?_state=abc", "u4?x=1") ==
          "https://reg:5000/v2/team/app/blobs/uploads/u4?x=1");
    // scheme-relative
    CHECK(upload_location(answered, "//other:443/u5") == "https://other:443/u5");
    CHECK_THROWS_WITH(upload_location(answered, std::nullopt), Catch::Contains("no Location header"));
    CHECK_THROWS_WITH(upload_location(answered, ""), Catch::Contains("no Location header"));
}

TEST_CASE("query parameters are added with ? or & and encoded", "[push]") {
    CHECK(add_query("http://r/v2/a/blobs/uploads/u", "digest", "sha256:ab") ==
          "http://r/v2/a/blobs/uploads/u?digest=sha256%3Aab");
    CHECK(add_query("http://r/u?_state=x", "digest", "sha256:ab") == "http://r/u?_state=x&digest=sha256%3Aab");
    CHECK(add_query("http://r/u?", "mount", "m") == "http://r/u?mount=m");
    CHECK(add_query("http://r/u?a=1&", "from", "team/base") == "http://r/u?a=1&from=team%2Fbase");
    CHECK(add_query("http://r/u#frag", "k", "v") == "http://r/u?k=v");
}

TEST_CASE("chunk Content-Range and the registry's Range", "[push]") {
    CHECK(chunk_content_range(0, 100) == "0-99");
    CHECK(chunk_content_range(100, 1) == "100-100");
    CHECK(parse_upload_range("0-99") == std::optional<std::uint64_t>(99));
    CHECK(parse_upload_range("0-0") == std::optional<std::uint64_t>(0));
    CHECK(parse_upload_range("bytes=0-4095") == std::optional<std::uint64_t>(4095));
    CHECK_FALSE(parse_upload_range(""));
    CHECK_FALSE(parse_upload_range("0-"));
    CHECK_FALSE(parse_upload_range("5-10"));  // a session always starts at 0
    CHECK_FALSE(parse_upload_range("0-1x"));
    CHECK_FALSE(parse_upload_range("0-123456789012345678901234"));
}

TEST_CASE("a blob is mounted from the latest other repository of the same registry", "[push]") {
    std::vector<oci::BlobSource> sources = {
        {"reg:5000", "team/base"}, {"other:5000", "team/x"}, {"reg:5000", "team/app"}, {"reg:5000", "library/debian"}};
    CHECK(choose_mount_source(sources, "reg:5000", "team/app") == std::optional<std::string>("library/debian"));
    CHECK(choose_mount_source(sources, "reg:5000", "library/debian") == std::optional<std::string>("team/app"));
    CHECK(choose_mount_source(sources, "other:5000", "team/x") == std::nullopt);  // only itself there
    CHECK(choose_mount_source(sources, "third:1", "team/app") == std::nullopt);
    CHECK(choose_mount_source({}, "reg:5000", "team/app") == std::nullopt);
}

TEST_CASE("blob source records: parsed leniently, appended once, capped", "[push][store]") {
    CHECK(oci::parse_blob_sources("reg:5000 team/base\nbad-line\n\nreg:5000 team/base\nr a b\ndocker.io library/x\npartial y") ==
          std::vector<oci::BlobSource>{{"reg:5000", "team/base"}, {"docker.io", "library/x"}});

    TempDir dir;
    oci::Store store = oci::Store::open(dir.path / "store");
    oci::Digest d = oci::sha256_of("blob");
    CHECK(oci::read_blob_sources(store, d).empty());  // no sources/ at all: unknown
    oci::record_blob_source(store, d, {"reg:5000", "team/base"});
    oci::record_blob_source(store, d, {"reg:5000", "team/base"});
    oci::record_blob_source(store, d, {"reg:5000", "team/app"});
    CHECK(oci::read_blob_sources(store, d) ==
          std::vector<oci::BlobSource>{{"reg:5000", "team/base"}, {"reg:5000", "team/app"}});
    CHECK(read_file(oci::blob_sources_path(store, d)) == "reg:5000 team/base\nreg:5000 team/app\n");
    for (std::size_t i = 0; i < oci::kMaxBlobSources + 4; ++i)
        oci::record_blob_source(store, d, {"reg:5000", "r" + std::to_string(i)});
    CHECK(oci::read_blob_sources(store, d).size() == oci::kMaxBlobSources);
    CHECK_THROWS_WITH(oci::record_blob_source(store, d, {"reg:5000", "a b"}), Catch::Contains("invalid source"));
    // The store still opens with sources/ present (a checked part like volumes/).
    CHECK_NOTHROW(oci::Store::open(dir.path / "store"));
}

TEST_CASE("only a name with a registry is a push destination by itself", "[push]") {
    CHECK(names_registry("127.0.0.1:5000/team/base:1"));
    CHECK(names_registry("localhost/app"));
    CHECK(names_registry("docker.io/library/debian"));
    CHECK_FALSE(names_registry("aishell:base"));
    CHECK_FALSE(names_registry("debian"));
    CHECK_FALSE(names_registry("team/app:1"));
}

TEST_CASE("push --chunk-size reads sizes in binary units, errors naming the flag", "[push][format]") {
    CHECK(cli::parse_size("1048576", "--chunk-size") == 1048576);
    CHECK(cli::parse_size("512k", "--chunk-size") == 512 * 1024);
    CHECK(cli::parse_size("5m", "--chunk-size") == 5 * 1024 * 1024);
    CHECK(cli::parse_size("5MiB", "--chunk-size") == 5 * 1024 * 1024);
    CHECK(cli::parse_size("5MB", "--chunk-size") == 5 * 1024 * 1024);
    CHECK(cli::parse_size("1g", "--chunk-size") == 1024ull * 1024 * 1024);
    CHECK(cli::parse_size("7b", "--chunk-size") == 7);
    for (const char* bad : {"", "k", "5x", "5 m", "-1", "5mm", "+5", " 5"})
        CHECK_THROWS_WITH(cli::parse_size(bad, "--chunk-size"),
                          "--chunk-size \"" + std::string(bad) + "\" is not a size");
    for (const char* big : {"0", "0k", "99999999999999999999", "5000000000g", "4611686018427387905"})
        CHECK_THROWS_WITH(cli::parse_size(big, "--chunk-size"),
                          "--chunk-size \"" + std::string(big) + "\" is out of range (1 byte to 4 EiB)");
    CHECK(cli::parse_size("4611686018427387904", "--chunk-size") == std::uint64_t{1} << 62);
}
