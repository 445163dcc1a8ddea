// pull_image against an in-memory registry behind fake transports: platform choice from an
// index (attestations and unknown media types passed over), the mirror tried first and the
// origin after it, and a failed pull leaving the store as it was.
#include <catch2/catch.hpp>

#include <map>
#include <mutex>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/digest.hpp"
#include "oci/media_types.hpp"
#include "oci/store.hpp"
#include "registry/pull.hpp"

namespace fs = std::filesystem;
using namespace aishell;
using namespace aishell::registry;
using nlohmann::json;

namespace {

// URL -> (status, content type, body), shared by every transport the pull creates.
class MemoryRegistry {
public:
    void put(const std::string& url, std::string body, std::string content_type = "application/octet-stream") {
        std::lock_guard lock(mutex_);
        routes_[url] = {std::move(body), std::move(content_type)};
    }
    Response answer(const Request& request) {
        std::lock_guard lock(mutex_);
        requested.push_back(request.method + " " + request.url);
        auto it = routes_.find(request.url);
        Response r;
        if (it == routes_.end()) {
            r.status = 404;
            r.body = R"({"errors":[{"code":"NOT_FOUND","message":"no such thing"}]})";
            return r;
        }
        r.status = 200;
        r.headers = {{"content-type", it->second.second}};
        if (request.method == "HEAD") return r;
        if (request.sink) {
            request.sink(it->second.first);
            if (request.on_progress) request.on_progress(it->second.first.size());
        } else {
            r.body = it->second.first;
        }
        return r;
    }
    TransportFactory factory() {
        return [this] { return std::make_unique<Forwarder>(*this); };
    }
    std::vector<std::string> requested;

private:
    struct Forwarder final : Transport {
        explicit Forwarder(MemoryRegistry& r) : registry(r) {}
        Response send(const Request& request) override { return registry.answer(request); }
        MemoryRegistry& registry;
    };
    std::mutex mutex_;
    std::map<std::string, std::pair<std::string, std::string>> routes_;
};

struct TinyImage {
    std::string layer = "not really a tar, the puller does not look inside";
    std::string config;
    std::string manifest;
    oci::Digest manifest_digest() const { return oci::sha256_of(manifest); }
};

TinyImage make_image(const std::string& arch) {
    TinyImage image;
    image.layer += arch;
    json config = {{"architecture", arch},
                   {"os", "linux"},
                   {"rootfs", {{"type", "layers"}, {"diff_ids", {oci::sha256_of(image.layer).str()}}}}};
    image.config = config.dump();
    json manifest = {{"schemaVersion", 2},
                     {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"config",
                      {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                       {"digest", oci::sha256_of(image.config).str()},
                       {"size", image.config.size()}}},
                     {"layers",
                      {{{"mediaType", "application/vnd.oci.image.layer.v1.tar"},
                        {"digest", oci::sha256_of(image.layer).str()},
                        {"size", image.layer.size()}}}}};
    image.manifest = manifest.dump();
    return image;
}

void serve(MemoryRegistry& reg, const std::string& base, const std::string& repo, const TinyImage& image) {
    reg.put(base + "/v2/", "{}", "application/json");
    reg.put(base + "/v2/" + repo + "/blobs/" + oci::sha256_of(image.layer).str(), image.layer);
    reg.put(base + "/v2/" + repo + "/blobs/" + oci::sha256_of(image.config).str(), image.config);
    reg.put(base + "/v2/" + repo + "/manifests/" + image.manifest_digest().str(), image.manifest,
            "application/vnd.oci.image.manifest.v1+json");
}

json index_entry(const std::string& media_type, const std::string& body, const std::string& os,
                 const std::string& arch) {
    return {{"mediaType", media_type},
            {"digest", oci::sha256_of(body).str()},
            {"size", body.size()},
            {"platform", {{"os", os}, {"architecture", arch}}}};
}

struct TempStore {
    fs::path dir = fs::temp_directory_path() / ("aishell-pull-" + random_hex(6));
    oci::Store store = oci::Store::open(dir);
    ~TempStore() { fs::remove_all(dir); }
};

PullOptions options_for(MemoryRegistry& reg) {
    PullOptions o;
    o.transports = reg.factory();
    o.retry.max_attempts = 1;
    o.platform = oci::Platform::parse("linux/amd64");
    o.mirror = "";  // not the environment's
    return o;
}

}  // namespace

TEST_CASE("pull: from an index, the host's platform wins and attestations are passed over", "[pull]") {
    MemoryRegistry reg;
    const std::string base = "http://127.0.0.1:5000";
    TinyImage amd64 = make_image("amd64");
    TinyImage arm64 = make_image("arm64");
    serve(reg, base, "lib/app", amd64);
    serve(reg, base, "lib/app", arm64);
    std::string attestation = R"({"schemaVersion":2,"layers":[]})";
    json index = {{"schemaVersion", 2},
                  {"mediaType", "application/vnd.oci.image.index.v1+json"},
                  {"manifests",
                   {index_entry("application/vnd.oci.image.manifest.v1+json", attestation, "unknown", "unknown"),
                    index_entry("application/vnd.example.unknown+json", "x", "linux", "amd64"),
                    index_entry("application/vnd.oci.image.manifest.v1+json", arm64.manifest, "linux", "arm64"),
                    index_entry("application/vnd.oci.image.manifest.v1+json", amd64.manifest, "linux", "amd64")}}};
    reg.put(base + "/v2/lib/app/manifests/1", index.dump(), "application/vnd.oci.image.index.v1+json");

    TempStore ts;
    PullResult result = pull_image(ts.store, Reference::parse("127.0.0.1:5000/lib/app:1"), options_for(reg));
    CHECK(result.name == "127.0.0.1:5000/lib/app:1");
    CHECK(result.manifest.digest == amd64.manifest_digest());
    CHECK(result.index_digest == oci::sha256_of(index.dump()));
    auto entry = ts.store.find_image("127.0.0.1:5000/lib/app:1");
    REQUIRE(entry);
    CHECK(entry->descriptor.digest == amd64.manifest_digest());
    // Stored byte for byte under the digest of the bytes received.
    CHECK(ts.store.read_blob(amd64.manifest_digest(), oci::kMaxManifestSize) == amd64.manifest);
    CHECK(ts.store.has_blob(oci::sha256_of(amd64.layer)));
    CHECK_FALSE(ts.store.has_blob(oci::sha256_of(arm64.layer)));

    auto arm = options_for(reg);
    arm.platform = oci::Platform::parse("linux/arm64");
    CHECK(pull_image(ts.store, Reference::parse("127.0.0.1:5000/lib/app:1"), arm).manifest.digest ==
          arm64.manifest_digest());

    auto riscv = options_for(reg);
    riscv.platform = oci::Platform::parse("linux/riscv64");
    CHECK_THROWS_WITH(pull_image(ts.store, Reference::parse("127.0.0.1:5000/lib/app:1"), riscv),
                      Catch::Contains("linux/riscv64") && Catch::Contains("linux/amd64"));
}

TEST_CASE("pull: a Docker Hub image comes from the mirror first", "[pull]") {
    MemoryRegistry reg;
    TinyImage image = make_image("amd64");
    serve(reg, "http://127.0.0.1:5999", "library/busybox", image);
    reg.put("http://127.0.0.1:5999/v2/library/busybox/manifests/1", image.manifest,
            "application/vnd.oci.image.manifest.v1+json");
    TempStore ts;
    auto options = options_for(reg);
    options.mirror = "127.0.0.1:5999";
    PullResult result = pull_image(ts.store, Reference::parse("busybox:1"), options);
    CHECK(result.name == "docker.io/library/busybox:1");
    CHECK(result.manifest.digest == image.manifest_digest());
    for (const auto& r : reg.requested) CHECK(r.find("docker.io") == std::string::npos);
}

TEST_CASE("pull: when the mirror lacks the image, the origin serves it", "[pull]") {
    MemoryRegistry reg;
    TinyImage image = make_image("amd64");
    reg.put("http://127.0.0.1:5999/v2/", "{}", "application/json");  // a mirror without the image
    serve(reg, "https://registry-1.docker.io", "library/busybox", image);
    reg.put("https://registry-1.docker.io/v2/library/busybox/manifests/1", image.manifest,
            "application/vnd.oci.image.manifest.v1+json");
    TempStore ts;
    auto options = options_for(reg);
    options.mirror = "127.0.0.1:5999";
    struct Messages : PullObserver {
        std::mutex m;
        std::vector<std::string> lines;
        void on_message(std::string_view s) override {
            std::lock_guard lock(m);
            lines.emplace_back(s);
        }
    } messages;
    options.observer = &messages;
    PullResult result = pull_image(ts.store, Reference::parse("docker.io/library/busybox:1"), options);
    CHECK(result.manifest.digest == image.manifest_digest());
    REQUIRE(messages.lines.size() == 1);
    CHECK_THAT(messages.lines[0], Catch::Contains("mirror 127.0.0.1:5999 failed"));
    // Only Docker Hub references use the mirror.
    reg.requested.clear();
    serve(reg, "http://127.0.0.1:5000", "lib/other", image);
    reg.put("http://127.0.0.1:5000/v2/lib/other/manifests/1", image.manifest,
            "application/vnd.oci.image.manifest.v1+json");
    pull_image(ts.store, Reference::parse("127.0.0.1:5000/lib/other:1"), options);
    for (const auto& r : reg.requested) CHECK(r.find("5999") == std::string::npos);
}

TEST_CASE("pull: a blob whose bytes do not match its digest fails and adds nothing", "[pull]") {
    MemoryRegistry reg;
    const std::string base = "http://127.0.0.1:5000";
    TinyImage image = make_image("amd64");
    serve(reg, base, "lib/app", image);
    reg.put(base + "/v2/lib/app/manifests/1", image.manifest, "application/vnd.oci.image.manifest.v1+json");
    std::string tampered = image.layer;
    tampered[0] ^= 1;
    reg.put(base + "/v2/lib/app/blobs/" + oci::sha256_of(image.layer).str(), tampered);
    TempStore ts;
    CHECK_THROWS_WITH(pull_image(ts.store, Reference::parse("127.0.0.1:5000/lib/app:1"), options_for(reg)),
                      Catch::Contains("digest mismatch"));
    CHECK(ts.store.list_images().empty());
    CHECK_FALSE(ts.store.has_blob(oci::sha256_of(image.config)));
    CHECK_FALSE(ts.store.has_blob(image.manifest_digest()));
}

TEST_CASE("pull: select_platform_manifest names what it wanted and what there was", "[pull]") {
    oci::Index index;
    index.kind = oci::ManifestKind::OciIndex;
    oci::Descriptor d;
    d.media_type = "application/vnd.oci.image.manifest.v1+json";
    d.digest = oci::sha256_of("a");
    d.size = 1;
    d.platform = oci::Platform::parse("linux/arm/v7");
    index.manifests.push_back(d);
    CHECK(select_platform_manifest(index, oci::Platform::parse("linux/arm/v8")).digest == d.digest);
    CHECK_THROWS_WITH(select_platform_manifest(index, oci::Platform::parse("linux/arm/v6")),
                      Catch::Contains("linux/arm/v6") && Catch::Contains("linux/arm/v7"));
}
