// The build step cache: key chaining, entries that survive a new StepCache (restart), a miss when
// the layer blob is gone, corrupt entries, and the GC roots it reports.
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "common/file.hpp"
#include "composer/step_cache.hpp"
#include "oci/media_types.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using namespace aishell;
using namespace aishell::composer;

namespace {

StepLayer layer_of(oci::Store& store, const std::string& bytes) {
    StepLayer l;
    l.descriptor.media_type = std::string(oci::media_type::kOciLayerGzip);
    l.descriptor.digest = store.put_blob(bytes);
    l.descriptor.size = static_cast<std::int64_t>(bytes.size());
    l.diff_id = oci::sha256_of("uncompressed " + bytes);
    return l;
}

}  // namespace

TEST_CASE("step keys chain the parent and every part, length-prefixed", "[step_cache]") {
    auto parent = oci::sha256_of("parent");
    auto k = step_key(parent, {"RUN a", "X=1"});
    CHECK(k == step_key(parent, {"RUN a", "X=1"}));
    CHECK(k != step_key(oci::sha256_of("other parent"), {"RUN a", "X=1"}));
    CHECK(k != step_key(parent, {"RUN a", "X=2"}));
    CHECK(k != step_key(parent, {"RUN a"}));
    // Moving bytes between parts changes the key.
    CHECK(step_key(parent, {"ab", "c"}) != step_key(parent, {"a", "bc"}));
}

TEST_CASE("a cache entry survives a new cache object and names its layer", "[step_cache]") {
    TempDir dir;
    auto store = oci::Store::open(dir.path / "store");
    auto key = step_key(oci::sha256_of("p"), {"COPY a /a"});
    StepLayer layer = layer_of(store, "layer bytes");
    {
        StepCache cache(store);
        CHECK_FALSE(cache.get(key));
        cache.put(key, CacheEntry{"2024-01-02T03:04:05Z", layer});
    }
    StepCache again(store);
    auto hit = again.get(key);
    REQUIRE(hit);
    CHECK(hit->created == "2024-01-02T03:04:05Z");
    REQUIRE(hit->layer);
    CHECK(hit->layer->descriptor.digest == layer.descriptor.digest);
    CHECK(hit->layer->diff_id == layer.diff_id);
    CHECK(fs::exists(again.path_for(key)));
}

TEST_CASE("an entry without a layer is a hit with no layer", "[step_cache]") {
    TempDir dir;
    auto store = oci::Store::open(dir.path / "store");
    StepCache cache(store);
    auto key = step_key(oci::sha256_of("p"), {"ENV A=b"});
    cache.put(key, CacheEntry{"2024-01-02T03:04:05Z", std::nullopt});
    auto hit = cache.get(key);
    REQUIRE(hit);
    CHECK_FALSE(hit->layer);
}

TEST_CASE("an entry whose layer blob is gone is a miss", "[step_cache]") {
    TempDir dir;
    auto store = oci::Store::open(dir.path / "store");
    StepCache cache(store);
    auto key = step_key(oci::sha256_of("p"), {"RUN x"});
    StepLayer layer = layer_of(store, "gone soon");
    cache.put(key, CacheEntry{"2024-01-02T03:04:05Z", layer});
    REQUIRE(cache.get(key));
    fs::remove(store.blob_path(layer.descriptor.digest));
    CHECK_FALSE(cache.get(key));
}

TEST_CASE("a corrupt or foreign-version entry is a miss, never an error", "[step_cache]") {
    TempDir dir;
    auto store = oci::Store::open(dir.path / "store");
    StepCache cache(store);
    auto key = step_key(oci::sha256_of("p"), {"RUN y"});
    make_dirs(store.cache_dir());
    write_file_atomic(cache.path_for(key), "{not json");
    CHECK_FALSE(cache.get(key));
    write_file_atomic(cache.path_for(key), R"({"version":99,"created":"x","layer":null})");
    CHECK_FALSE(cache.get(key));
}

TEST_CASE("an empty or cut-off entry, what a crash can leave of an unsynced write, is a miss", "[step_cache]") {
    TempDir dir;
    auto store = oci::Store::open(dir.path / "store");
    StepCache cache(store);
    auto key = step_key(oci::sha256_of("p"), {"RUN z"});
    StepLayer layer = layer_of(store, "z layer");
    cache.put(key, CacheEntry{"2024-01-02T03:04:05Z", layer});
    std::string whole = read_file(cache.path_for(key));
    REQUIRE(cache.get(key));
    for (std::size_t cut : {std::size_t{0}, whole.size() / 2, whole.size() - 1}) {
        std::ofstream(cache.path_for(key), std::ios::trunc) << whole.substr(0, cut);
        CHECK_FALSE(cache.get(key));
    }
    // A new put (the step ran again) replaces the broken entry.
    cache.put(key, CacheEntry{"2024-01-02T03:04:06Z", layer});
    auto hit = cache.get(key);
    REQUIRE(hit);
    CHECK(hit->created == "2024-01-02T03:04:06Z");
}

TEST_CASE("put replaces an entry in place and leaves no temp file behind", "[step_cache]") {
    TempDir dir;
    auto store = oci::Store::open(dir.path / "store");
    StepCache cache(store);
    auto key = step_key(oci::sha256_of("p"), {"RUN w"});
    cache.put(key, CacheEntry{"first", std::nullopt});
    cache.put(key, CacheEntry{"second", std::nullopt});
    REQUIRE(cache.get(key));
    CHECK(cache.get(key)->created == "second");
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(store.cache_dir())) names.push_back(e.path().filename().string());
    CHECK(names == std::vector<std::string>{fs::path(cache.path_for(key)).filename().string()});
}

TEST_CASE("the cache's layer blobs are GC roots", "[step_cache]") {
    TempDir dir;
    auto store = oci::Store::open(dir.path / "store");
    StepCache cache(store);
    StepLayer a = layer_of(store, "a"), b = layer_of(store, "b");
    cache.put(step_key(oci::sha256_of("p"), {"1"}), CacheEntry{"t", a});
    cache.put(step_key(oci::sha256_of("p"), {"2"}), CacheEntry{"t", b});
    cache.put(step_key(oci::sha256_of("p"), {"3"}), CacheEntry{"t", std::nullopt});
    auto roots = step_cache_roots(store);
    std::sort(roots.begin(), roots.end());
    std::vector<oci::Digest> want{a.descriptor.digest, b.descriptor.digest};
    std::sort(want.begin(), want.end());
    CHECK(roots == want);

    oci::GcOptions options;
    options.extra_roots = roots;
    auto lock = store.lock_exclusive();
    auto result = oci::collect_garbage(store, options);
    CHECK(store.has_blob(a.descriptor.digest));
    CHECK(store.has_blob(b.descriptor.digest));
}
