// The store (oci/store.hpp): layout creation, format version, verified blob writes, resumable
// partials, index.json naming, meta.json, the store lock.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/store.hpp"
#include "temp_dir.hpp"

using aishell::Error;
using nlohmann::json;
namespace fs = std::filesystem;
namespace oci = aishell::oci;
namespace mt = aishell::oci::media_type;

namespace {

std::size_t count_entries(const fs::path& dir) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
    return n;
}

oci::Descriptor manifest_descriptor(oci::Store& store, const std::string& tag_data) {
    oci::Digest config = store.put_blob(R"({"rootfs":{"type":"layers","diff_ids":[]},"x":")" + tag_data + "\"}");
    oci::Manifest m;
    m.config = {std::string(mt::kOciConfig), config, static_cast<std::int64_t>(*store.blob_size(config)), {}, {}, {}, {}};
    std::string bytes = oci::manifest_to_json(m);
    oci::Digest d = store.put_blob(bytes);
    return {std::string(mt::kOciManifest), d, static_cast<std::int64_t>(bytes.size()), {}, {}, {}, {}};
}

}  // namespace

TEST_CASE("store: open creates a valid OCI layout and the aishell areas", "[store]") {
    TempDir dir;
    fs::path root = dir.path / "nested" / "store";
    oci::Store store = oci::Store::open(root);
    CHECK(store.root() == root);
    for (const char* sub : {"oci/blobs/sha256", "layers", "cache", "tmp", "leases", "chain", "volumes"})
        CHECK(fs::is_directory(root / sub));
    CHECK(aishell::read_file(root / "oci" / "oci-layout") == R"({"imageLayoutVersion":"1.0.0"})");
    CHECK(json::parse(aishell::read_file(root / "oci" / "index.json")) ==
          json::parse(R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})"));
    CHECK(aishell::read_file(root / "version") == "2\n");
    CHECK(oci::kStoreFormatVersion == 2);  // the one constant the header declares is what open writes
    CHECK(store.list_images().empty());
    // Reopening changes nothing.
    CHECK_NOTHROW(oci::Store::open(root));
    CHECK(aishell::read_file(root / "version") == "2\n");
}

TEST_CASE("store: a new store is 0700 and no part of it group-writable, whatever the umask", "[store]") {
    TempDir dir;
    fs::path root = dir.path / "store";
    mode_t old = ::umask(002);
    oci::Store::open(root);
    ::umask(old);
    struct stat st {};
    REQUIRE(::stat(root.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    for (const char* sub : {"oci", "oci/blobs", "oci/blobs/sha256", "layers", "cache", "tmp", "leases", "chain", "volumes"}) {
        REQUIRE(::stat((root / sub).c_str(), &st) == 0);
        CHECK((st.st_mode & 022) == 0);
    }
}

TEST_CASE("store: a part others can write is refused with the fix, and an open root is closed", "[store]") {
    TempDir dir;
    fs::path root = dir.path / "store";
    oci::Store::open(root);
    for (const char* part : {"", "oci", "layers", "cache", "tmp", "leases", "chain", "volumes"}) {
        fs::path path = *part ? root / part : root;
        ::chmod(path.c_str(), 0770);
        try {
            oci::Store::open(root);
            FAIL("opened a store whose " << path << " is group-writable");
        } catch (const Error& e) {
            CHECK(e.message() == "open store " + root.string() + ": " + path.string() +
                                     " is writable by its group (mode 0770): they could change what aishell runs as you");
            CHECK(e.hint() == "chmod go-w " + path.string());
        }
        ::chmod(path.c_str(), 0755);
    }
    aishell::write_file_atomic(root / "meta.json", "{}", 0606);
    ::chmod((root / "meta.json").c_str(), 0606);
    CHECK_THROWS_WITH(oci::Store::open(root), Catch::Contains("meta.json is writable by other users (mode 0606)"));
    ::chmod((root / "meta.json").c_str(), 0600);
    CHECK_NOTHROW(oci::Store::open(root));
    struct stat st {};
    REQUIRE(::stat(root.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);  // was 0755
}

TEST_CASE("store: a different format version is refused with a hint", "[store]") {
    TempDir dir;
    oci::Store::open(dir.path);
    aishell::write_file_atomic(dir.path / "version", "3\n");
    try {
        oci::Store::open(dir.path);
        FAIL("opened a version 3 store");
    } catch (const Error& e) {
        CHECK(e.message() == "open store " + dir.path.string() +
                                 ": store format version 3 is not supported (this aishell uses 2)");
        CHECK_THAT(e.hint(), Catch::Contains("new directory"));
    }
    CHECK(aishell::read_file(dir.path / "version") == "3\n");  // left alone
}

TEST_CASE("store: a format 1 store is upgraded in place, its images kept", "[store]") {
    TempDir dir;
    oci::Digest d;
    {
        oci::Store store = oci::Store::open(dir.path);
        auto lock = store.lock_exclusive();
        oci::Descriptor m = manifest_descriptor(store, "a");
        store.tag_image("aishell:base", m);
        d = m.digest;
    }
    // What a format 1 store had: no chain/ and no volumes/.
    fs::remove(dir.path / "chain");
    fs::remove(dir.path / "volumes");
    aishell::write_file_atomic(dir.path / "version", "1\n");
    oci::Store store = oci::Store::open(dir.path);
    CHECK(aishell::read_file(dir.path / "version") == "2\n");
    CHECK(fs::is_directory(dir.path / "chain"));
    CHECK(fs::is_directory(dir.path / "volumes"));
    REQUIRE(store.find_image("aishell:base"));
    CHECK(store.find_image("aishell:base")->descriptor.digest == d);
}

TEST_CASE("store: default root follows AISHELL_STORE, then XDG_DATA_HOME", "[store]") {
    const char* saved_store = std::getenv("AISHELL_STORE");
    const char* saved_xdg = std::getenv("XDG_DATA_HOME");
    std::string s1 = saved_store ? saved_store : "", s2 = saved_xdg ? saved_xdg : "";
    ::setenv("AISHELL_STORE", "/x/store", 1);
    CHECK(oci::Store::default_root() == "/x/store");
    ::unsetenv("AISHELL_STORE");
    ::setenv("XDG_DATA_HOME", "/x/data", 1);
    CHECK(oci::Store::default_root() == "/x/data/aishell");
    if (saved_store) ::setenv("AISHELL_STORE", s1.c_str(), 1);
    if (saved_xdg) ::setenv("XDG_DATA_HOME", s2.c_str(), 1); else ::unsetenv("XDG_DATA_HOME");
}

TEST_CASE("store: put_blob and read_blob round trip, verified", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest d = store.put_blob("hello blob");
    CHECK(d == oci::sha256_of("hello blob"));
    CHECK(store.has_blob(d));
    CHECK(store.blob_size(d) == 10u);
    CHECK(store.blob_path(d) == dir.path / "oci/blobs/sha256" / std::string(d.encoded()));
    CHECK(store.read_blob(d, 1024) == "hello blob");
    CHECK(store.verify_blob(d));
    CHECK(store.put_blob("hello blob") == d);  // idempotent
    CHECK(count_entries(dir.path / "tmp") == 0);

    CHECK_THROWS_WITH(store.read_blob(d, 5), Catch::StartsWith("read blob " + d.short_form() + ": "));

    oci::Digest absent = oci::sha256_of("absent");
    CHECK_FALSE(store.has_blob(absent));
    CHECK_FALSE(store.blob_size(absent).has_value());
    CHECK_FALSE(store.verify_blob(absent));
    CHECK_THROWS_AS(store.read_blob(absent, 1024), Error);
}

TEST_CASE("store: read_blob refuses a corrupted blob", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest d = store.put_blob("original");
    aishell::write_file_atomic(store.blob_path(d), "tampered");
    CHECK_FALSE(store.verify_blob(d));
    try {
        store.read_blob(d, 1024);
        FAIL("corrupt blob read");
    } catch (const Error& e) {
        CHECK(e.message() == "read blob " + d.short_form() + ": blob is corrupt: content hashes to " +
                                 oci::sha256_of("tampered").str());
        CHECK_FALSE(e.hint().empty());
    }
}

TEST_CASE("store: BlobCheck::TrustStore skips the rehash but still checks the descriptor's length", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor d = manifest_descriptor(store, "a");
    const std::string original = store.read_blob(d.digest, 1024);
    CHECK(oci::read_manifest_blob(store, d, oci::BlobCheck::TrustStore) == original);
    SECTION("same length, other bytes: only a rehash notices") {
        std::string other = original;
        other.back() = other.back() == ' ' ? '\n' : ' ';
        aishell::write_file_atomic(store.blob_path(d.digest), other);
        CHECK(oci::read_manifest_blob(store, d, oci::BlobCheck::TrustStore) == other);
        CHECK_THROWS_WITH(oci::read_manifest_blob(store, d), Catch::Contains("blob is corrupt: content hashes to"));
    }
    SECTION("truncated: both notice") {
        aishell::write_file_atomic(store.blob_path(d.digest), original.substr(0, original.size() - 1));
        CHECK_THROWS_WITH(oci::read_manifest_blob(store, d, oci::BlobCheck::TrustStore),
                          Catch::Contains("is corrupt: " + std::to_string(original.size() - 1) + " bytes, its descriptor says " +
                                          std::to_string(original.size())));
        CHECK_THROWS(oci::read_manifest_blob(store, d));
    }
}

TEST_CASE("store: only sha256 digests are stored", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest d512 = oci::Digest::parse("sha512:" + std::string(128, 'a'));
    CHECK_FALSE(store.has_blob(d512));
    CHECK_THROWS_WITH(store.blob_path(d512), Catch::StartsWith("unsupported digest algorithm"));
    CHECK_THROWS_AS(store.begin_blob(d512), Error);
}

TEST_CASE("store: a digest mismatch leaves no blob and no temp file", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest expected = oci::sha256_of("the real content");
    {
        oci::BlobWriter w = store.begin_blob();
        w.write("something else");
        CHECK_THROWS_WITH(w.commit(expected),
                          "digest mismatch: expected " + expected.str() + ", got " + oci::sha256_of("something else").str());
    }
    CHECK_FALSE(store.has_blob(expected));
    CHECK_FALSE(store.has_blob(oci::sha256_of("something else")));
    CHECK(count_entries(store.oci_dir() / "blobs/sha256") == 0);
    CHECK(count_entries(store.tmp_dir()) == 0);
}

TEST_CASE("store: a size mismatch is refused before the digest is trusted", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest d = oci::sha256_of("12345");
    oci::BlobWriter w = store.begin_blob();
    w.write("12345");
    CHECK_THROWS_WITH(w.commit(d, 6), "size mismatch for " + d.str() + ": expected 6 bytes, got 5");
    CHECK_FALSE(store.has_blob(d));
    CHECK(count_entries(store.tmp_dir()) == 0);
}

TEST_CASE("store: an abandoned writer leaves nothing behind", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    {
        oci::BlobWriter w = store.begin_blob();
        w.write("half");
        CHECK(count_entries(store.tmp_dir()) == 1);
    }
    CHECK(count_entries(store.tmp_dir()) == 0);
    CHECK(count_entries(store.oci_dir() / "blobs/sha256") == 0);
}

TEST_CASE("store: commit_computed stores under the content's digest", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::BlobWriter w = store.begin_blob();
    w.write("part one, ");
    w.write("part two");
    CHECK(w.size() == 18);
    oci::Digest d = w.commit_computed();
    CHECK(d == oci::sha256_of("part one, part two"));
    CHECK(store.read_blob(d, 100) == "part one, part two");
    CHECK(count_entries(store.tmp_dir()) == 0);
}

TEST_CASE("store: a resumable partial continues where it stopped", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    std::string content(300000, 'z');
    for (std::size_t i = 0; i < content.size(); i += 7) content[i] = static_cast<char>('a' + i % 26);
    oci::Digest d = oci::sha256_of(content);
    fs::path partial = store.tmp_dir() / ("partial-" + std::string(d.encoded()));
    {
        oci::BlobWriter w = store.begin_blob(d);
        CHECK(w.size() == 0);
        w.write(content.data(), 100000);
    }  // the writer dies: the partial stays
    REQUIRE(fs::exists(partial));
    CHECK(fs::file_size(partial) == 100000);
    CHECK_FALSE(store.has_blob(d));
    {
        oci::BlobWriter w = store.begin_blob(d);
        CHECK(w.size() == 100000);  // existing bytes re-hashed
        w.write(content.data() + 100000, content.size() - 100000);
        w.commit(d, static_cast<std::int64_t>(content.size()));
    }
    CHECK_FALSE(fs::exists(partial));
    CHECK(store.read_blob(d, content.size()) == content);
}

TEST_CASE("store: a corrupt partial is discarded at commit, and the next try starts over", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest d = oci::sha256_of("good bytes");
    fs::path partial = store.tmp_dir() / ("partial-" + std::string(d.encoded()));
    aishell::write_file_atomic(partial, "bad ");
    {
        oci::BlobWriter w = store.begin_blob(d);
        CHECK(w.size() == 4);
        w.write("bytes");
        CHECK_THROWS_WITH(w.commit(d), Catch::StartsWith("digest mismatch"));
    }
    CHECK_FALSE(fs::exists(partial));
    CHECK_FALSE(store.has_blob(d));
    oci::BlobWriter w = store.begin_blob(d);
    CHECK(w.size() == 0);
    w.write("good bytes");
    w.commit(d);
    CHECK(store.has_blob(d));
}

TEST_CASE("store: two writers never share a partial", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest d = oci::sha256_of("AAAABBBB");
    oci::BlobWriter first = store.begin_blob(d);
    first.write("AAAA");
    oci::BlobWriter second = store.begin_blob(d);  // the partial is locked: a fresh temp file
    CHECK(second.size() == 0);
    second.write("AAAABBBB");
    second.commit(d);
    first.write("BBBB");
    first.commit(d);  // renames over an identical blob
    CHECK(store.read_blob(d, 100) == "AAAABBBB");
    CHECK(count_entries(store.tmp_dir()) == 0);
}

TEST_CASE("store: discard drops a resumable partial too", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest d = oci::sha256_of("x");
    oci::BlobWriter w = store.begin_blob(d);
    w.write("partial data");
    w.discard();
    CHECK(count_entries(store.tmp_dir()) == 0);
}

TEST_CASE("store: layout round trip: write blobs, tag, reopen, list", "[store]") {
    TempDir dir;
    oci::Descriptor a, b;
    {
        oci::Store store = oci::Store::open(dir.path);
        auto lock = store.lock_exclusive();
        a = manifest_descriptor(store, "a");
        b = manifest_descriptor(store, "b");
        store.tag_image("aishell:foundation", a);
        store.tag_image("aishell:base", a);
        store.tag_image("aishell:ext-0123456789ab", b);
    }
    oci::Store store = oci::Store::open(dir.path);
    auto images = store.list_images();
    REQUIRE(images.size() == 3);
    CHECK(images[0].name == "aishell:foundation");
    CHECK(images[0].descriptor.digest == a.digest);
    CHECK(images[0].descriptor.size == a.size);
    CHECK(images[0].descriptor.media_type == mt::kOciManifest);
    CHECK(images[0].descriptor.annotations.at(std::string(oci::kRefNameAnnotation)) == "aishell:foundation");
    CHECK(images[2].descriptor.digest == b.digest);
    auto found = store.find_image("aishell:base");
    REQUIRE(found);
    CHECK(found->descriptor.digest == a.digest);
    CHECK_FALSE(store.find_image("aishell:nope"));
    // The manifest it names reads back verified.
    std::string bytes = oci::read_manifest_blob(store, found->descriptor);
    CHECK(oci::parse_manifest(bytes, oci::ManifestKind::OciManifest).config.media_type == mt::kOciConfig);
}

TEST_CASE("store: tag_image replaces an entry of the same name and untag removes it", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor a = manifest_descriptor(store, "a");
    oci::Descriptor b = manifest_descriptor(store, "b");
    store.tag_image("aishell:base", a);
    store.tag_image("aishell:base", b);
    auto images = store.list_images();
    REQUIRE(images.size() == 1);
    CHECK(images[0].descriptor.digest == b.digest);
    CHECK(store.untag_image("aishell:base"));
    CHECK_FALSE(store.untag_image("aishell:base"));
    CHECK(store.list_images().empty());
}

TEST_CASE("store: tagging a name with the descriptor it already has does not rewrite index.json", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor a = manifest_descriptor(store, "a");
    oci::Descriptor b = manifest_descriptor(store, "b");
    const fs::path index = store.oci_dir() / "index.json";
    auto inode = [&] {
        struct stat st {};
        REQUIRE(::stat(index.c_str(), &st) == 0);
        return st.st_ino;
    };
    store.tag_image("x:1", a);
    store.tag_image("y:1", b);
    const auto written = inode();
    const std::string bytes = aishell::read_file(index);
    store.tag_image("x:1", a);  // no change: the same file, byte for byte
    CHECK(inode() == written);
    CHECK(aishell::read_file(index) == bytes);
    store.tag_image("x:1", b);  // a change: replaced (atomically, so a new inode)
    CHECK(inode() != written);
    REQUIRE(store.find_image("x:1"));
    CHECK(store.find_image("x:1")->descriptor.digest == b.digest);
    // Two entries of one name (written by another tool) collapse into one even when one matches.
    json j = json::parse(aishell::read_file(index));
    j["manifests"].push_back(j["manifests"][1]);
    aishell::write_file_atomic(index, j.dump());
    store.tag_image("x:1", b);
    std::size_t named = 0;
    for (const auto& e : store.list_images()) named += e.name == "x:1";
    CHECK(named == 1);
}

TEST_CASE("store: index.json keeps unknown fields and entries it does not name", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor a = manifest_descriptor(store, "a");
    // Another tool (umoci, skopeo) wrote these.
    json index = {{"schemaVersion", 2},
                  {"mediaType", mt::kOciIndex},
                  {"annotations", {{"com.example.top", "kept"}}},
                  {"manifests",
                   {{{"mediaType", mt::kOciManifest},
                     {"digest", a.digest.str()},
                     {"size", a.size},
                     {"com.example.extra", {{"nested", true}}},
                     {"annotations", {{std::string(oci::kRefNameAnnotation), "other"}, {"com.example.note", "n"}}}},
                    {{"mediaType", mt::kOciManifest}, {"digest", a.digest.str()}, {"size", a.size}}}}};
    aishell::write_file_atomic(store.oci_dir() / "index.json", index.dump());
    store.tag_image("aishell:base", a);
    json after = json::parse(aishell::read_file(store.oci_dir() / "index.json"));
    CHECK(after["annotations"]["com.example.top"] == "kept");
    REQUIRE(after["manifests"].size() == 3);
    CHECK(after["manifests"][0] == index["manifests"][0]);
    CHECK(after["manifests"][1] == index["manifests"][1]);
    // An unnamed entry is not an image to list.
    auto images = store.list_images();
    REQUIRE(images.size() == 2);
    CHECK(images[0].name == "other");
    CHECK(images[0].descriptor.annotations.at("com.example.note") == "n");
    CHECK(images[1].name == "aishell:base");
}

TEST_CASE("store: a broken index.json is reported, not overwritten", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    aishell::write_file_atomic(store.oci_dir() / "index.json", "{\"manifests\": 5}");
    CHECK_THROWS_WITH(store.list_images(), Catch::EndsWith("index.json is not a valid image index"));
    CHECK_THROWS_AS(store.tag_image("x", manifest_descriptor(store, "x")), Error);
    CHECK(aishell::read_file(store.oci_dir() / "index.json") == "{\"manifests\": 5}");
}

TEST_CASE("store: read_manifest_blob refuses a descriptor over the manifest limit", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor d = manifest_descriptor(store, "a");
    d.size = static_cast<std::int64_t>(oci::kMaxManifestSize) + 1;
    CHECK_THROWS_WITH(oci::read_manifest_blob(store, d), Catch::EndsWith("over the limit of 4194304"));
}

TEST_CASE("store: meta.json key/value", "[store]") {
    TempDir dir;
    {
        oci::Store store = oci::Store::open(dir.path);
        CHECK_FALSE(store.get_meta("foundation").has_value());
        store.set_meta("foundation", "docker.io/library/debian:bookworm");
        store.set_meta("idmap", "subuid:100000:65536");
        store.set_meta("foundation", "127.0.0.1:5000/debian:12");
        store.erase_meta("idmap");
        store.erase_meta("never-set");
    }
    oci::Store store = oci::Store::open(dir.path);
    CHECK(store.get_meta("foundation") == "127.0.0.1:5000/debian:12");
    CHECK_FALSE(store.get_meta("idmap").has_value());
    CHECK(json::parse(aishell::read_file(dir.path / "meta.json")) ==
          json{{"foundation", "127.0.0.1:5000/debian:12"}});
    aishell::write_file_atomic(dir.path / "meta.json", "[]");
    CHECK_THROWS_WITH(store.get_meta("x"), Catch::EndsWith("meta.json is not a JSON object"));
}

TEST_CASE("store: the store lock excludes a second holder until released", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    {
        oci::StoreLock held = store.lock_exclusive();
        CHECK(held.held());
        CHECK_FALSE(store.try_lock_exclusive().has_value());
        // Another process sees it held too (flock is per open file description).
        aishell::UniqueFd fd = aishell::open_file(dir.path / "lock", O_RDONLY);
        CHECK(::flock(fd.get(), LOCK_EX | LOCK_NB) < 0);
        CHECK(errno == EWOULDBLOCK);
    }
    auto again = store.try_lock_exclusive();
    REQUIRE(again.has_value());
    CHECK(again->held());
}

TEST_CASE("store: a finished writer refuses further writes", "[store]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::BlobWriter w = store.begin_blob();
    w.write("abc");
    oci::Digest d = w.commit_computed();
    CHECK_THROWS_WITH(w.write("more"), "blob writer used after commit or discard");
    CHECK_THROWS_WITH(w.commit(d), "blob writer used after commit or discard");
    CHECK(store.read_blob(d, 10) == "abc");
    oci::BlobWriter discarded = store.begin_blob();
    discarded.discard();
    CHECK_THROWS_AS(discarded.write("x"), Error);
}
