// Garbage collection of the blob store (oci/gc.cpp): what index.json and extra roots reach
// survives; everything else, and stale temp files, goes; dry_run only reports.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "common/file.hpp"
#include "oci/gc.hpp"
#include "oci/lease.hpp"
#include "oci/store.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
namespace oci = aishell::oci;
namespace mt = aishell::oci::media_type;

namespace {

oci::Descriptor describe(oci::Store& store, std::string_view media_type, const std::string& bytes) {
    oci::Digest d = store.put_blob(bytes);
    return {std::string(media_type), d, static_cast<std::int64_t>(bytes.size()), {}, {}, {}, {}};
}

// A manifest with a config and one layer per given content; returns its descriptor.
oci::Descriptor put_image(oci::Store& store, const std::string& name, std::vector<std::string> layers,
                          std::string_view layer_type = mt::kOciLayerGzip) {
    oci::Manifest m;
    m.config = describe(store, mt::kOciConfig, R"({"rootfs":{"type":"layers","diff_ids":[]},"n":")" + name + "\"}");
    for (const auto& l : layers) m.layers.push_back(describe(store, layer_type, l));
    return describe(store, mt::kOciManifest, oci::manifest_to_json(m));
}

bool contains(const std::vector<oci::Digest>& v, const oci::Digest& d) {
    return std::find(v.begin(), v.end(), d) != v.end();
}

void age(const fs::path& p, int seconds) {
    struct timespec times[2];
    ::clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= seconds;
    times[1] = times[0];
    REQUIRE(::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0);
}

}  // namespace

TEST_CASE("gc: blobs reachable from index.json survive, orphans go", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    auto lock = store.lock_exclusive();
    oci::Descriptor kept = put_image(store, "kept", {"layer-1", "shared"});
    store.tag_image("aishell:base", kept);
    oci::Descriptor dropped = put_image(store, "dropped", {"layer-2", "shared"});
    oci::Digest orphan = store.put_blob("orphan");

    oci::GcResult r = oci::collect_garbage(store, {});
    CHECK(store.has_blob(kept.digest));
    CHECK(store.has_blob(oci::sha256_of("layer-1")));
    CHECK(store.has_blob(oci::sha256_of("shared")));
    CHECK(store.verify_blob(kept.digest));
    CHECK_FALSE(store.has_blob(dropped.digest));
    CHECK_FALSE(store.has_blob(oci::sha256_of("layer-2")));
    CHECK_FALSE(store.has_blob(orphan));
    CHECK(contains(r.removed_blobs, orphan));
    CHECK(contains(r.removed_blobs, dropped.digest));
    CHECK(r.removed_blobs.size() == 4);  // dropped manifest, its config, layer-2, orphan
    CHECK(r.removed_bytes > 0);
    // The image still loads after collection.
    std::string bytes = oci::read_manifest_blob(store, kept);
    for (const auto& l : oci::parse_manifest(bytes, oci::ManifestKind::OciManifest).layers)
        CHECK(store.verify_blob(l.digest));
}

TEST_CASE("gc: indexes are followed into their manifests", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor amd = put_image(store, "amd64", {"amd-layer"});
    oci::Descriptor arm = put_image(store, "arm64", {"arm-layer"});
    oci::Index index;
    index.manifests = {amd, arm};
    oci::Descriptor idx = describe(store, mt::kOciIndex, oci::index_to_json(index));
    store.tag_image("multi", idx);
    oci::GcResult r = oci::collect_garbage(store, {});
    CHECK(r.removed_blobs.empty());
    CHECK(store.has_blob(oci::sha256_of("arm-layer")));
    CHECK(store.has_blob(oci::sha256_of("amd-layer")));
}

TEST_CASE("gc: blobs of unknown media type referenced by a manifest are kept", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor m = put_image(store, "odd", {"signature or sbom"}, "application/vnd.example.sbom+json");
    store.tag_image("odd", m);
    oci::GcResult r = oci::collect_garbage(store, {});
    CHECK(r.removed_blobs.empty());
    CHECK(store.has_blob(oci::sha256_of("signature or sbom")));
}

TEST_CASE("gc: extra roots keep a manifest with what it references, or a plain blob", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor cached = put_image(store, "step", {"step-layer"});
    oci::Digest plain = store.put_blob("cache entry blob");
    oci::Digest gone = store.put_blob("unreferenced");
    oci::GcOptions opts;
    opts.extra_roots = {cached.digest, plain, oci::sha256_of("missing root")};
    oci::GcResult r = oci::collect_garbage(store, opts);
    CHECK(store.has_blob(cached.digest));
    CHECK(store.has_blob(oci::sha256_of("step-layer")));
    CHECK(store.has_blob(plain));
    CHECK_FALSE(store.has_blob(gone));
    CHECK(r.removed_blobs == std::vector<oci::Digest>{gone});
}

TEST_CASE("gc: dry_run reports without removing", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest orphan = store.put_blob("orphan");
    fs::path stale = store.tmp_dir() / "blob.old";
    aishell::write_file_atomic(stale, "old");
    age(stale, 3 * 24 * 3600);
    oci::GcOptions opts;
    opts.dry_run = true;
    oci::GcResult r = oci::collect_garbage(store, opts);
    CHECK(r.removed_blobs == std::vector<oci::Digest>{orphan});
    CHECK(r.removed_bytes == 6);
    CHECK(r.removed_temp == std::vector<fs::path>{stale});
    CHECK(store.has_blob(orphan));
    CHECK(fs::exists(stale));
}

TEST_CASE("gc: stale temp files go, fresh and locked ones stay", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    fs::path stale = store.tmp_dir() / "blob.stale";
    fs::path fresh = store.tmp_dir() / "blob.fresh";
    fs::path stale_dir = store.tmp_dir() / "work.stale";
    aishell::write_file_atomic(stale, "s");
    aishell::write_file_atomic(fresh, "f");
    aishell::make_dirs(stale_dir / "sub");
    age(stale, 2 * 24 * 3600);
    age(stale_dir, 2 * 24 * 3600);

    // A download in progress holds its partial, however old the file looks.
    oci::Digest d = oci::sha256_of("downloading");
    oci::BlobWriter writer = store.begin_blob(d);
    writer.write("down");
    fs::path partial = store.tmp_dir() / ("partial-" + std::string(d.encoded()));
    age(partial, 2 * 24 * 3600);

    oci::GcResult r = oci::collect_garbage(store, {});
    CHECK_FALSE(fs::exists(stale));
    CHECK_FALSE(fs::exists(stale_dir));
    CHECK(fs::exists(fresh));
    CHECK(fs::exists(partial));
    CHECK(r.removed_temp.size() == 2);

    writer.write("loading");
    writer.commit(d);
    CHECK(store.read_blob(d, 100) == "downloading");
}

TEST_CASE("gc: a corrupt manifest stops collection instead of deleting its blobs", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Descriptor m = put_image(store, "x", {"precious"});
    store.tag_image("x", m);
    aishell::write_file_atomic(store.blob_path(m.digest), "garbage");
    CHECK_THROWS_WITH(oci::collect_garbage(store, {}), Catch::StartsWith("garbage collection: "));
    CHECK(store.has_blob(oci::sha256_of("precious")));
}

TEST_CASE("gc: with an approved plan only what it listed goes, and only if it is still garbage", "[gc]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    oci::Digest listed = store.put_blob("listed");
    oci::Digest listed_then_named = store.put_blob("listed, then named");
    fs::path stale = store.tmp_dir() / "stale.listed";
    aishell::write_file_atomic(stale, "s");
    age(stale, 2 * 24 * 3600);
    oci::PruneGcResult plan;
    {
        oci::LeaseRemovalLock held(store);
        oci::PruneGcOptions dry;
        dry.gc.dry_run = true;
        plan = oci::collect_garbage(store, dry, held, oci::read_live_leases(held, {}, true));
    }
    REQUIRE(plan.gc.removed_blobs.size() == 2);
    REQUIRE(plan.gc.removed_temp == std::vector<fs::path>{stale});

    // While the question waits: a new orphan blob and a new stale temp file appear, and one
    // listed blob becomes part of an image.
    oci::Digest unlisted = store.put_blob("unlisted");
    fs::path unlisted_temp = store.tmp_dir() / "stale.unlisted";
    aishell::write_file_atomic(unlisted_temp, "u");
    age(unlisted_temp, 2 * 24 * 3600);
    {
        auto lock = store.lock_exclusive();
        oci::Manifest m;
        m.config = {std::string(mt::kOciConfig), listed_then_named, 18, {}, {}, {}, {}};
        store.tag_image("now:1", describe(store, mt::kOciManifest, oci::manifest_to_json(m)));
    }

    oci::LeaseRemovalLock held(store);
    oci::PruneGcOptions approved;
    approved.approved = &plan;
    oci::PruneGcResult r = oci::collect_garbage(store, approved, held, oci::read_live_leases(held));
    CHECK(r.gc.removed_blobs == std::vector<oci::Digest>{listed});
    CHECK_FALSE(store.has_blob(listed));
    CHECK(store.has_blob(listed_then_named));
    CHECK(store.has_blob(unlisted));
    CHECK(r.gc.removed_temp == std::vector<fs::path>{stale});
    CHECK(fs::exists(unlisted_temp));
}
