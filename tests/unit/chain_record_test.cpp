#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "composer/chain_record.hpp"
#include "oci/digest.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using namespace aishell::composer;
using aishell::oci::Digest;
using aishell::oci::ImageEntry;

namespace {

Digest digest_of(const std::string& s) { return aishell::oci::sha256_of(s); }

ImageEntry entry(const std::string& name, const Digest& d) {
    ImageEntry e;
    e.name = name;
    e.descriptor.digest = d;
    return e;
}

ChainBuild ext_build(const std::string& project, const Digest& manifest, const Digest& base) {
    ChainBuild b;
    b.name = ext_image_name(project);
    b.manifest = manifest;
    b.custom = true;
    b.input_hash = digest_of("in").str();
    b.content_hash = digest_of("content").str();
    b.from = {{"aishell:base", base.str()}};
    b.built_on = base.str();
    b.generation = 2;
    b.dockerfile_hash = digest_of("Dockerfile").str();
    return b;
}

}  // namespace

TEST_CASE("chain record: an ext's name is the first 12 hex of the project path's sha256", "[chain]") {
    // printf %s /home/u/src/p | sha256sum
    CHECK(ext_image_name("/home/u/src/p") == "aishell:ext-" + std::string(digest_of("/home/u/src/p").encoded().substr(0, 12)));
    CHECK(ext_image_name("/a").size() == std::string("aishell:ext-").size() + 12);
    CHECK(ext_image_name("/a") != ext_image_name("/b"));
}

TEST_CASE("chain record: JSON round trip, and a store without one reads as empty", "[chain]") {
    TempDir dir;
    auto store = aishell::oci::Store::open(dir.path / "store");
    CHECK(read_chain_record(store) == ChainRecord{});

    ChainRecord r;
    r.generation = 3;
    ChainBuild base;
    base.name = "aishell:base";
    base.manifest = digest_of("base");
    base.from = {{"aishell:foundation", digest_of("f").str()}};
    r.base = base;
    r.exts["/p"] = ext_build("/p", digest_of("ext"), digest_of("base"));
    r.contexts["/p/.aishell"] =
        ContextMemo{"0123456789abcdef", digest_of("c").str(), {"aishell:base"}, "aishell:base", digest_of("d").str()};
    {
        auto lock = store.lock_exclusive();
        write_chain_record(store, lock, r);
    }
    CHECK(read_chain_record(store) == r);
    CHECK(chain_record_from_json(chain_record_to_json(r), "x") == r);
}

TEST_CASE("chain record: writing needs the store lock, and a damaged record is an error with a fix", "[chain]") {
    TempDir dir;
    auto store = aishell::oci::Store::open(dir.path / "store");
    aishell::oci::StoreLock not_held;
    CHECK_THROWS_AS(write_chain_record(store, not_held, ChainRecord{}), aishell::Error);
    aishell::write_file_atomic(chain_record_path(store), R"({"version":1,"generation":"x"})");
    try {
        read_chain_record(store);
        FAIL("read a damaged record");
    } catch (const aishell::Error& e) {
        CHECK_THAT(e.message(), Catch::Contains("is not a valid chain record"));
        CHECK(e.hint() == "remove " + chain_record_path(store).string() + " to let aishell rebuild the chain's images");
    }
    aishell::write_file_atomic(chain_record_path(store), R"({"version":7})");
    CHECK_THROWS_WITH(read_chain_record(store), Catch::Contains("is not a chain record of version 1"));
}

TEST_CASE("chain record: tiers come from the names and the record, never from labels", "[chain]") {
    ChainRecord r;
    const Digest f = digest_of("f"), b = digest_of("b"), x = digest_of("x");
    r.base = ChainBuild{"aishell:base", b, true, {}, {}, {}, {}, 0};
    r.exts["/p"] = ext_build("/p", x, b);

    CHECK(image_tier(r, entry("aishell:foundation", f)).tier == Tier::Foundation);
    auto base = image_tier(r, entry("aishell:base", b));
    CHECK(base.tier == Tier::Base);
    CHECK(base.custom);
    // aishell:base naming a manifest the chain did not build: still the base, not a custom one.
    CHECK_FALSE(image_tier(r, entry("aishell:base", f)).custom);
    auto ext = image_tier(r, entry(ext_image_name("/p"), x));
    CHECK(ext.tier == Tier::Ext);
    CHECK(ext.project == "/p");
    // The same manifest under another name (a copy tagged by the user) is "other"; so is an
    // ext name the record does not hold with that manifest.
    CHECK(image_tier(r, entry("mine:1", x)).tier == Tier::Other);
    CHECK(image_tier(r, entry("mine:1", b)).tier == Tier::Other);
    CHECK(image_tier(r, entry(ext_image_name("/p"), b)).tier == Tier::Other);
    CHECK(image_tier(r, entry(ext_image_name("/q"), x)).tier == Tier::Other);
    CHECK(tier_name(Tier::Ext) == "ext");
}

TEST_CASE("chain record: orphans are exts of gone projects, of moved bases, and unknown ext names", "[chain]") {
    TempDir dir;
    const std::string live = dir.path.string(), gone = (dir.path / "gone").string(), moved = (dir.path / "m").string();
    fs::create_directory(moved);
    const Digest b = digest_of("b"), b2 = digest_of("b2");
    ChainRecord r;
    r.exts[live] = ext_build(live, digest_of("1"), b2);
    r.exts[gone] = ext_build(gone, digest_of("2"), b2);
    r.exts[moved] = ext_build(moved, digest_of("3"), b);
    std::vector<ImageEntry> index{entry("aishell:base", b2), entry(ext_image_name(live), digest_of("1")),
                                  entry(ext_image_name(gone), digest_of("2")), entry(ext_image_name(moved), digest_of("3")),
                                  entry("aishell:ext-000000000000", digest_of("4")), entry("other:1", digest_of("5"))};
    auto orphans = chain_orphans(r, index);
    REQUIRE(orphans.size() == 3);
    CHECK(orphans[0].name == ext_image_name(gone));
    CHECK(orphans[0].reason == "its project " + gone + " is gone");
    CHECK(orphans[1].name == ext_image_name(moved));
    CHECK(orphans[1].reason == "built on aishell:base, which has moved on");
    CHECK(orphans[2].name == "aishell:ext-000000000000");
    CHECK(orphans[2].project.empty());
    CHECK(forget_ext(r, gone));
    CHECK_FALSE(forget_ext(r, gone));
}

TEST_CASE("chain record: a record from before the Dockerfile hash was kept reads with it empty", "[chain]") {
    // What the first release of the chain wrote: no dockerfile_hash in builds or memos. Its
    // staleness is then reported as "its Dockerfile or a file in its context changed".
    const std::string d = digest_of("x").str();
    ChainRecord r = chain_record_from_json(
        R"({"version":1,"generation":0,"base":{"name":"aishell:base","manifest":")" + d +
            R"(","custom":true,"input_hash":"","content_hash":"","from":{},"built_on":"","generation":0},)"
            R"("exts":{},"contexts":{"/c":{"fingerprint":"f","content_hash":"","from_images":[],"final_from":""}}})",
        "record.json");
    REQUIRE(r.base);
    CHECK(r.base->dockerfile_hash.empty());
    CHECK(r.contexts.at("/c").dockerfile_hash.empty());
    CHECK(chain_record_from_json(chain_record_to_json(r), "x") == r);
}
