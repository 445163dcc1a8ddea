// Leases (oci/lease.hpp) and how removers honour them: the file format, live and dead leases,
// a store's writes recorded in its lease, and garbage collection keeping what a live lease
// names (blobs, what a leased manifest references, layer trees) but not what a dead one names.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "child_process.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/gc.hpp"
#include "oci/lease.hpp"
#include "oci/owner_table.hpp"
#include "oci/store.hpp"
#include "temp_dir.hpp"

using aishell::Error;
namespace fs = std::filesystem;
namespace oci = aishell::oci;
namespace mt = aishell::oci::media_type;
using oci::LeaseEntry;

namespace {

bool contains(const std::vector<oci::Digest>& v, const oci::Digest& d) { return std::find(v.begin(), v.end(), d) != v.end(); }

std::size_t lease_files(const oci::Store& store) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(store.leases_dir())) ++n;
    return n;
}

// A lease whose holder died: made by a child that exits without ending it (as kill -9 would
// leave it); its flock went with the child. Returns the lease file's path.
fs::path dead_lease(const oci::Store& store, const std::vector<LeaseEntry>& entries) {
    int status = 0;
    std::string path = aishell::test::output_of_child(
        [&] {
            auto lease = oci::Lease::create(store, "test", entries);
            // Leaked on purpose: the child _exits with the lease unended, its file left behind.
            new std::shared_ptr<oci::Lease>(lease);  // NOLINT
            return lease->path().string();
        },
        status);
    REQUIRE(WIFEXITED(status));
    REQUIRE(fs::exists(path));
    return path;
}

fs::path make_tree(const oci::Store& store, const std::string& hex) {
    fs::path tree = store.layers_dir() / hex;
    fs::create_directories(tree / "usr" / "bin");
    aishell::write_file_atomic(tree / "usr" / "bin" / "tool", "x");
    return tree;
}

std::string hex_of(char c) { return std::string(64, c); }

oci::Descriptor describe(oci::Store& store, std::string_view media_type, const std::string& bytes) {
    oci::Digest d = store.put_blob(bytes);
    return {std::string(media_type), d, static_cast<std::int64_t>(bytes.size()), {}, {}, {}, {}};
}

// A manifest whose config names the given diff_ids, with one layer blob per diff_id.
oci::Descriptor put_image(oci::Store& store, const std::string& name, const std::vector<std::string>& diff_hexes) {
    oci::Manifest m;
    std::string ids;
    for (const auto& h : diff_hexes) ids += (ids.empty() ? "\"sha256:" : ",\"sha256:") + h + "\"";
    m.config = describe(store, mt::kOciConfig, R"({"rootfs":{"type":"layers","diff_ids":[)" + ids + R"(]},"n":")" + name + "\"}");
    for (const auto& h : diff_hexes) m.layers.push_back(describe(store, mt::kOciLayerGzip, name + "-layer-" + h));
    return describe(store, mt::kOciManifest, oci::manifest_to_json(m));
}

}  // namespace

TEST_CASE("lease: entries round trip, and malformed ones are refused", "[lease]") {
    const oci::Digest d = oci::sha256_of("x");
    for (const auto& e : {LeaseEntry::blob(d), LeaseEntry::blob(d, true), LeaseEntry::layer(d), LeaseEntry::layer(d, true),
                          LeaseEntry::volume("cache_1.x-y"), LeaseEntry::volume("v", true)})
        CHECK(oci::parse_lease_entry(oci::format_lease_entry(e).substr(0, oci::format_lease_entry(e).size() - 1)) == e);
    CHECK(oci::format_lease_entry(LeaseEntry::layer(d, true)) == "made layer " + std::string(d.encoded()) + "\n");
    CHECK(oci::format_lease_entry(LeaseEntry::blob(d)) == "use blob " + d.str() + "\n");
    for (const char* bad : {"use blob sha256:abc", "use blob sha512:" "00", "keep blob " "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                            "use tree 0000000000000000000000000000000000000000000000000000000000000000",
                            "use layer 000000000000000000000000000000000000000000000000000000000000000A",
                            "use layer ../../etc", "use volume ../x", "use volume -x", "use volume", "use", ""})
        CHECK_THROWS_AS(oci::parse_lease_entry(bad), Error);
    CHECK_THROWS_AS(oci::format_lease_entry(LeaseEntry::volume("a/b")), Error);
    // Files: a header, then entries, each line terminated.
    CHECK(oci::parse_lease_file("aishell-lease 1 exec\nuse layer " + hex_of('a') + "\n", "f").size() == 1);
    CHECK(oci::parse_lease_file("aishell-lease 1\n", "f").empty());
    CHECK_THROWS_WITH(oci::parse_lease_file("aishell-lease 1 exec\nuse layer " + hex_of('a'), "f"),
                      Catch::Contains("lease f") && Catch::Contains("line 2 is not terminated"));
    CHECK_THROWS_WITH(oci::parse_lease_file("something else\n", "f"), Catch::Contains("not an aishell lease"));
    CHECK_THROWS_WITH(oci::parse_lease_file("aishell-lease 1\nuse blob nope\n", "f"), Catch::Contains("line 2"));
    CHECK_THROWS_AS(oci::parse_lease_file("", "f"), Error);
}

TEST_CASE("lease: a held lease is live and read by removers, and ending it removes the file", "[lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    const oci::Digest blob = oci::sha256_of("b");
    fs::path path;
    {
        auto lease = oci::Lease::create(store, "exec", {LeaseEntry::blob(blob), LeaseEntry::layer(blob)});
        path = lease->path();
        lease->add({LeaseEntry::volume("data"), LeaseEntry::blob(blob)});  // the repeat is not written again
        CHECK(lease->entries() == std::vector<LeaseEntry>{LeaseEntry::blob(blob), LeaseEntry::layer(blob), LeaseEntry::volume("data")});
        CHECK(path.parent_path() == store.leases_dir());
        CHECK(path.filename().string().rfind(std::to_string(::getpid()) + "-", 0) == 0);

        oci::LeaseRemovalLock held(store);
        oci::LiveLeases live = oci::read_live_leases(held);
        CHECK(live.holders == 1);
        CHECK(live.blobs == std::set<oci::Digest>{blob});
        CHECK(live.holds_layer(blob));
        CHECK(live.volumes == std::set<std::string>{"data"});
        CHECK(live.dead.empty());
        // A remover's own lease is not counted.
        CHECK(oci::read_live_leases(held, path).holders == 0);
    }
    CHECK_FALSE(fs::exists(path));
    oci::LeaseRemovalLock held(store);
    CHECK(oci::read_live_leases(held).holders == 0);
}

TEST_CASE("lease: a lease whose holder died protects nothing and is removed", "[lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    fs::path path = dead_lease(store, {LeaseEntry::blob(oci::sha256_of("b"))});
    oci::LeaseRemovalLock held(store);
    SECTION("a dry run only reports it") {
        oci::LiveLeases live = oci::read_live_leases(held, {}, true);
        CHECK(live.holders == 0);
        CHECK(live.blobs.empty());
        CHECK(live.dead == std::vector<fs::path>{path});
        CHECK(fs::exists(path));
    }
    SECTION("a remover removes it") {
        oci::LiveLeases live = oci::read_live_leases(held);
        CHECK(live.holders == 0);
        CHECK(live.dead == std::vector<fs::path>{path});
        CHECK_FALSE(fs::exists(path));
    }
}

TEST_CASE("lease: a live lease that does not parse stops the remover", "[lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lease = oci::Lease::create(store, "build");
    aishell::UniqueFd fd = aishell::open_file(lease->path(), O_WRONLY | O_APPEND);
    aishell::write_all(fd.get(), "use blob not-a-digest\n", "lease");
    oci::LeaseRemovalLock held(store);
    CHECK_THROWS_WITH(oci::read_live_leases(held), Catch::Contains(lease->path().string()) && Catch::Contains("line 2"));
}

TEST_CASE("lease: while a remover holds its lock no lease is taken or extended", "[lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lease = oci::Lease::create(store, "build");
    oci::LeaseRemovalLock held(store);
    // Holders take the shared flock on leases/ (a new open file, as another process would).
    aishell::UniqueFd other = aishell::open_file(store.leases_dir(), O_RDONLY | O_DIRECTORY);
    CHECK(::flock(other.get(), LOCK_SH | LOCK_NB) != 0);
    CHECK(errno == EWOULDBLOCK);
}

TEST_CASE("lease: a joined lease adds to its creator's file and leaves it to the creator", "[lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lease = oci::Lease::create(store, "build");
    const oci::Digest d = oci::sha256_of("made by the helper");
    {
        auto joined = oci::Lease::join(lease->path());
        joined->add({LeaseEntry::blob(d, true)});
    }
    CHECK(fs::exists(lease->path()));
    CHECK(lease->entries() == std::vector<LeaseEntry>{LeaseEntry::blob(d, true)});
    CHECK_THROWS_WITH(oci::Lease::join(store.leases_dir() / "gone"), Catch::Contains("join lease"));
}

TEST_CASE("lease: a store with a lease records each blob before publishing it, as made when new", "[lease][store]") {
    TempDir dir;
    oci::Store plain = oci::Store::open(dir.path);
    const oci::Digest before = plain.put_blob("already there");
    auto lease = oci::Lease::create(plain, "build");
    oci::Store store = plain.with_lease(lease);
    CHECK(store.lease() == lease.get());
    CHECK(plain.lease() == nullptr);

    const oci::Digest fresh = store.put_blob("new");
    CHECK(store.put_blob("already there") == before);
    aishell::oci::BlobWriter w = store.begin_blob();
    w.write("streamed");
    const oci::Digest streamed = w.commit_computed();
    // A writer that publishes a blob someone else published first did not make it.
    aishell::oci::BlobWriter again = store.begin_blob();
    again.write("streamed");
    again.commit_computed();
    CHECK(lease->entries() == std::vector<LeaseEntry>{LeaseEntry::blob(fresh), LeaseEntry::blob(fresh, true),
                                                      LeaseEntry::blob(before), LeaseEntry::blob(streamed),
                                                      LeaseEntry::blob(streamed, true)});
}

TEST_CASE("gc: a leased blob survives, and one named only by a dead lease goes", "[gc][lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lock = store.lock_exclusive();
    const oci::Digest leased = store.put_blob("leased"), dead = store.put_blob("dead"), orphan = store.put_blob("orphan");
    auto lease = oci::Lease::create(store, "exec", {LeaseEntry::blob(leased)});
    fs::path dead_path = dead_lease(store, {LeaseEntry::blob(dead)});

    oci::GcResult r = oci::collect_garbage(store, {});
    CHECK(store.has_blob(leased));
    CHECK_FALSE(store.has_blob(dead));
    CHECK_FALSE(store.has_blob(orphan));
    CHECK(r.removed_blobs.size() == 2);
    CHECK(r.removed_leases == std::vector<fs::path>{dead_path});
    CHECK(lease_files(store) == 1);

    lease.reset();  // the command is over: its blob is garbage like any other
    r = oci::collect_garbage(store, {});
    CHECK_FALSE(store.has_blob(leased));
    CHECK(contains(r.removed_blobs, leased));
}

TEST_CASE("gc: a leased manifest keeps its config and layers", "[gc][lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lock = store.lock_exclusive();
    oci::Descriptor m = put_image(store, "untagged", {hex_of('1')});
    auto lease = oci::Lease::create(store, "exec", {LeaseEntry::blob(m.digest)});
    oci::GcResult r = oci::collect_garbage(store, {});
    CHECK(r.removed_blobs.empty());
    CHECK(store.has_blob(oci::sha256_of("untagged-layer-" + hex_of('1'))));
}

TEST_CASE("gc: layer trees stay while an image, a root or a live lease names them", "[gc][lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lock = store.lock_exclusive();
    store.tag_image("tagged", put_image(store, "tagged", {hex_of('1')}));
    for (char c : {'1', '2', '3', '4', '5'}) make_tree(store, hex_of(c));
    aishell::write_file_atomic(oci::layer_owner_table_path(store.layers_dir(), hex_of('5')), "aishell-owner-table 1\n");
    make_tree(store, "not-a-layer");
    auto lease = oci::Lease::create(store, "exec", {LeaseEntry::layer(oci::Digest::sha256_from_hex(hex_of('2')))});
    dead_lease(store, {LeaseEntry::layer(oci::Digest::sha256_from_hex(hex_of('4')))});

    oci::GcOptions options;
    options.sweep_layers = true;
    options.extra_layer_roots = {oci::Digest::sha256_from_hex(hex_of('3'))};
    SECTION("without sweep_layers no tree is touched") {
        options.sweep_layers = false;
        oci::GcResult r = oci::collect_garbage(store, options);
        CHECK(r.removed_layers.empty());
        for (char c : {'1', '2', '3', '4', '5'}) CHECK(fs::exists(store.layers_dir() / hex_of(c)));
    }
    SECTION("a dry run reports") {
        options.dry_run = true;
        oci::GcResult r = oci::collect_garbage(store, options);
        std::sort(r.removed_layers.begin(), r.removed_layers.end());
        CHECK(r.removed_layers == std::vector<std::string>{hex_of('4'), hex_of('5')});
        CHECK(r.layer_trash.empty());
        for (char c : {'4', '5'}) CHECK(fs::exists(store.layers_dir() / hex_of(c)));
    }
    SECTION("the others leave layers/ for tmp/, whole, with their owner tables removed") {
        oci::GcResult r = oci::collect_garbage(store, options);
        std::sort(r.removed_layers.begin(), r.removed_layers.end());
        CHECK(r.removed_layers == std::vector<std::string>{hex_of('4'), hex_of('5')});
        for (char c : {'1', '2', '3'}) CHECK(fs::exists(store.layers_dir() / hex_of(c) / "usr" / "bin" / "tool"));
        for (char c : {'4', '5'}) CHECK_FALSE(fs::exists(store.layers_dir() / hex_of(c)));
        CHECK_FALSE(fs::exists(oci::layer_owner_table_path(store.layers_dir(), hex_of('5'))));
        CHECK(fs::exists(store.layers_dir() / "not-a-layer"));
        REQUIRE(r.layer_trash.size() == 2);
        for (const auto& t : r.layer_trash) {
            CHECK(t.parent_path() == store.tmp_dir());
            CHECK(fs::exists(t / "usr" / "bin" / "tool"));
        }
    }
}

TEST_CASE("gc: re-owned copies of layer trees go by the same rule as layers/", "[gc][lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lock = store.lock_exclusive();
    store.tag_image("tagged", put_image(store, "tagged", {hex_of('1')}));
    const fs::path copies = dir.path / "layers-idmap-0123456789abcdef";
    for (const std::string& name : {hex_of('1'), hex_of('2'), hex_of('3'), ".tmp-" + hex_of('2') + "-abcd1234",
                                   ".tmp-" + hex_of('4') + "-abcd1234"})
        fs::create_directories(copies / name / "etc");
    aishell::write_file_atomic(copies / "mapping", "subuid u=0:1000:1 g=0:1000:1\n");
    auto lease = oci::Lease::create(store, "exec", {LeaseEntry::layer(oci::Digest::sha256_from_hex(hex_of('2')))});

    oci::PruneGcOptions options;
    options.gc.sweep_layers = true;
    options.layer_copy_dirs = {copies};
    oci::LeaseRemovalLock held(store);
    oci::PruneGcResult r = oci::collect_garbage(store, options, held, oci::read_live_leases(held));
    // Kept: the image's layer, the leased one and a copy of it still being made.
    for (const std::string& name : {hex_of('1'), hex_of('2'), ".tmp-" + hex_of('2') + "-abcd1234", std::string("mapping")})
        CHECK(fs::exists(copies / name));
    // Gone into tmp/: a copy of a layer nothing names, and a copier's leftover for one.
    CHECK_FALSE(fs::exists(copies / hex_of('3')));
    CHECK_FALSE(fs::exists(copies / (".tmp-" + hex_of('4') + "-abcd1234")));
    CHECK(r.removed_layer_copies.size() == 2);
    REQUIRE(r.gc.layer_trash.size() == 2);
    for (const auto& t : r.gc.layer_trash) CHECK(fs::exists(t / "etc"));
}

TEST_CASE("gc: ignore_names marks as if those names were gone", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lock = store.lock_exclusive();
    oci::Descriptor old_base = put_image(store, "old", {hex_of('1')});
    oci::Descriptor shared = put_image(store, "shared", {hex_of('2')});
    store.tag_image("old", old_base);
    store.tag_image("one", shared);
    store.tag_image("two", shared);
    make_tree(store, hex_of('1'));
    make_tree(store, hex_of('2'));

    oci::PruneGcOptions options;
    options.gc.dry_run = true;
    options.gc.sweep_layers = true;
    options.ignore_names = {"old", "one"};
    oci::LeaseRemovalLock held(store);
    oci::GcResult r = oci::collect_garbage(store, options, held, oci::read_live_leases(held)).gc;
    CHECK(contains(r.removed_blobs, old_base.digest));
    CHECK_FALSE(contains(r.removed_blobs, shared.digest));  // "two" still names it
    CHECK(r.removed_layers == std::vector<std::string>{hex_of('1')});
    CHECK(store.has_blob(old_base.digest));  // a dry run
}

TEST_CASE("gc: a rollback's collection takes only its candidates, not what another lease holds", "[gc][lease]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lock = store.lock_exclusive();
    auto own = oci::Lease::create(store, "build");
    oci::Store leased = store.with_lease(own);
    const oci::Digest mine = leased.put_blob("mine"), shared = leased.put_blob("shared"),
                      referenced = leased.put_blob("referenced"), foreign = store.put_blob("someone else's");
    auto other = oci::Lease::create(store, "build", {LeaseEntry::blob(shared)});

    oci::GcOptions options;
    options.only_blobs = {mine, shared, referenced};
    options.extra_roots = {referenced};  // e.g. a cache entry of another build names it
    options.own_lease = own->path();
    oci::GcResult r = oci::collect_garbage(store, options);
    CHECK(r.removed_blobs == std::vector<oci::Digest>{mine});
    CHECK_FALSE(store.has_blob(mine));
    CHECK(store.has_blob(shared));
    CHECK(store.has_blob(referenced));
    CHECK(store.has_blob(foreign));  // never a candidate
}
