// The image archive's names and documents (oci/archive_format.hpp) and what an archive of
// given images holds (archive_write.hpp's plan): what `docker save` of Docker 25 writes (moby
// daemon/internal/image/tarexport/save.go), checked field by field.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "oci/archive_format.hpp"
#include "oci/archive_write.hpp"
#include "oci/compress.hpp"
#include "oci/store.hpp"
#include "temp_dir.hpp"

using aishell::Error;
using nlohmann::json;
namespace oci = aishell::oci;
namespace archive = aishell::oci::image_archive;

namespace {

const std::string kHex1(64, '1');
const std::string kHex2(64, '2');
const std::string kHex3(64, '3');
oci::Digest digest(const std::string& hex) { return oci::Digest::sha256_from_hex(hex); }

oci::DockerArchiveImage item(std::vector<std::string> tags) {
    return {"blobs/sha256/" + kHex1, std::move(tags), {"blobs/sha256/" + kHex2, "blobs/sha256/" + kHex3}};
}

}  // namespace

TEST_CASE("archive: blobs are members blobs/<alg>/<hex>", "[archive]") {
    CHECK(archive::blob_member(digest(kHex1)) == "blobs/sha256/" + kHex1);
    CHECK(archive::blob_member_digest("blobs/sha256/" + kHex1) == digest(kHex1));
    CHECK_FALSE(archive::blob_member_digest("./blobs/sha256/" + kHex1));
    CHECK_FALSE(archive::blob_member_digest("blobs/sha256/" + kHex1 + "/x"));
    CHECK_FALSE(archive::blob_member_digest("blobs/sha256/"));
    CHECK_FALSE(archive::blob_member_digest("blobs//" + kHex1));
    CHECK_FALSE(archive::blob_member_digest("blobs/sha256/" + kHex1.substr(1)));
    CHECK_FALSE(archive::blob_member_digest("manifest.json"));
}

TEST_CASE("archive: repositories maps each RepoTag to the top layer", "[archive]") {
    auto a = item({"aishell:base", "127.0.0.1:5000/team/app:1.2"});
    json doc = json::parse(archive::repositories_json({a}));
    CHECK(doc == json{{"aishell", {{"base", kHex3}}}, {"127.0.0.1:5000/team/app", {{"1.2", kHex3}}}});
    CHECK(archive::repositories_json({item({})}).empty());
}

TEST_CASE("archive: index.json names each image as Docker 25 does", "[archive]") {
    oci::Descriptor m;
    m.media_type = std::string(oci::media_type::kOciManifest);
    m.digest = digest(kHex1);
    m.size = 512;
    m.annotations["org.opencontainers.image.ref.name"] = "aishell:base";  // the store's: not copied
    m.platform = oci::Platform{"linux", "amd64", "", "", {}};
    archive::IndexImage named{m, {{"aishell:base", "docker.io/library/aishell:base", "base"},
                                  {"", "docker.io/library/x@sha256:" + kHex1, ""}}};
    archive::IndexImage unnamed{m, {}};
    json doc = json::parse(archive::archive_index_json({named, unnamed}));
    CHECK(doc["schemaVersion"] == 2);
    CHECK(doc["mediaType"] == oci::media_type::kOciIndex);
    REQUIRE(doc["manifests"].size() == 3);
    json plain = {{"mediaType", oci::media_type::kOciManifest}, {"digest", "sha256:" + kHex1}, {"size", 512}};
    json first = plain;
    first["annotations"] = {{"io.containerd.image.name", "docker.io/library/aishell:base"},
                            {"org.opencontainers.image.ref.name", "base"}};
    json second = plain;
    second["annotations"] = {{"io.containerd.image.name", "docker.io/library/x@sha256:" + kHex1}};
    CHECK(doc["manifests"][0] == first);
    CHECK(doc["manifests"][1] == second);
    CHECK(doc["manifests"][2] == plain);
}

// ---- archive_write.hpp's plan ---------------------------------------------------------------

namespace {

// An image with one gzip and one zstd layer (config diff_ids d2, d3).
oci::Image image(const std::string& name, const std::string& manifest_hex) {
    oci::Image img;
    img.name = name;
    img.manifest_descriptor.media_type = std::string(oci::media_type::kOciManifest);
    img.manifest_descriptor.digest = digest(manifest_hex);
    img.manifest_descriptor.size = 400;
    img.manifest.config.media_type = std::string(oci::media_type::kOciConfig);
    img.manifest.config.digest = digest(kHex1);
    img.manifest.config.size = 100;
    oci::Descriptor gz{std::string(oci::media_type::kOciLayerGzip), digest(kHex2), 2000, {}, {}, {}, {}};
    oci::Descriptor zst{std::string(oci::media_type::kOciLayerZstd), digest(kHex3), 3000, {}, {}, {}, {}};
    img.manifest.layers = {gz, zst};
    return img;
}

const std::string kHexM(64, 'a');
const std::string kHexM2(64, 'b');
const std::string kHexCopy(64, 'c');

std::map<oci::Digest, oci::Descriptor> copies() {
    return {{digest(kHex3), oci::Descriptor{std::string(oci::media_type::kOciLayerGzip), digest(kHexCopy), 3500, {}, {}, {}, {}}}};
}

std::vector<std::string> document_names(const archive::ArchivePlan& plan) {
    std::vector<std::string> names;
    for (const auto& d : plan.documents) names.push_back(d.first);
    return names;
}

std::string document(const archive::ArchivePlan& plan, const std::string& name) {
    for (const auto& d : plan.documents)
        if (d.first == name) return d.second;
    return {};
}

}  // namespace

TEST_CASE("archive plan: both sides share blobs, zstd layers get gzip copies on the Docker side", "[archive]") {
    archive::SaveImage base{image("aishell:base", kHexM), {{"aishell:base", "docker.io/library/aishell:base", "base"}}};
    auto plan = archive::plan_archive({base}, archive::Sides::Both, copies());
    CHECK(document_names(plan) == std::vector<std::string>{"oci-layout", "index.json", "manifest.json", "repositories"});
    CHECK(document(plan, "oci-layout") == R"({"imageLayoutVersion": "1.0.0"})");
    CHECK(plan.blobs == std::vector<archive::ArchiveBlob>{{digest(kHexM), 400, false},
                                                          {digest(kHex1), 100, false},
                                                          {digest(kHex2), 2000, false},
                                                          {digest(kHex3), 3000, false},
                                                          {digest(kHexCopy), 3500, true}});
    auto items = oci::parse_docker_archive_manifest(document(plan, "manifest.json"));
    REQUIRE(items.size() == 1);
    CHECK(items[0].config == "blobs/sha256/" + kHex1);
    CHECK(items[0].repo_tags == std::vector<std::string>{"aishell:base"});
    CHECK(items[0].layers == std::vector<std::string>{"blobs/sha256/" + kHex2, "blobs/sha256/" + kHexCopy});
    json index = json::parse(document(plan, "index.json"));
    REQUIRE(index["manifests"].size() == 1);
    CHECK(index["manifests"][0]["digest"] == "sha256:" + kHexM);
    CHECK(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "base");
    CHECK(json::parse(document(plan, "repositories")) == json{{"aishell", {{"base", kHexCopy}}}});
}

TEST_CASE("archive plan: two images share blobs, two names of one image share an item", "[archive]") {
    archive::SaveImage a{image("a", kHexM), {{"a:latest", "docker.io/library/a:latest", "latest"}}};
    archive::SaveImage b{image("b", kHexM2), {{"b:1", "docker.io/library/b:1", "1"}}};
    archive::SaveImage a2{image("c", kHexM), {{"c:latest", "docker.io/library/c:latest", "latest"}}};
    auto plan = archive::plan_archive({a, b, a2}, archive::Sides::Both, copies());
    CHECK(plan.blobs.size() == 6);  // two manifests, one config, two layers, one copy
    json index = json::parse(document(plan, "index.json"));
    REQUIRE(index["manifests"].size() == 3);
    CHECK(index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/a:latest");
    CHECK(index["manifests"][1]["annotations"]["io.containerd.image.name"] == "docker.io/library/c:latest");
    CHECK(index["manifests"][1]["digest"] == "sha256:" + kHexM);
    CHECK(index["manifests"][2]["digest"] == "sha256:" + kHexM2);
    auto items = oci::parse_docker_archive_manifest(document(plan, "manifest.json"));
    REQUIRE(items.size() == 1);  // same config and layers: one image, as Docker groups by ID
    CHECK(items[0].repo_tags == std::vector<std::string>{"a:latest", "b:1", "c:latest"});
}

TEST_CASE("archive plan: --format oci has no Docker side and no copies, docker no OCI side", "[archive]") {
    archive::SaveImage a{image("a", kHexM), {{"a:latest", "docker.io/library/a:latest", "latest"}}};
    auto oci_plan = archive::plan_archive({a}, archive::Sides::Oci, {});
    CHECK(document_names(oci_plan) == std::vector<std::string>{"oci-layout", "index.json"});
    CHECK(oci_plan.blobs.size() == 4);
    auto docker_plan = archive::plan_archive({a}, archive::Sides::Docker, copies());
    CHECK(document_names(docker_plan) == std::vector<std::string>{"manifest.json", "repositories"});
    CHECK(docker_plan.blobs == std::vector<archive::ArchiveBlob>{{digest(kHex1), 100, false},
                                                                 {digest(kHex2), 2000, false},
                                                                 {digest(kHexCopy), 3500, true}});
    CHECK_THROWS_WITH(archive::plan_archive({a}, archive::Sides::Both, {}),
                      "save a: no gzip copy of zstd layer sha256:" + kHex3);
}

TEST_CASE("archive plan: an image saved without a tag is in index.json and untagged in manifest.json", "[archive]") {
    archive::SaveImage a{image("x@sha256:" + kHexM, kHexM), {{"", "docker.io/library/x@sha256:" + kHexM, ""}}};
    auto plan = archive::plan_archive({a}, archive::Sides::Both, copies());
    CHECK(document_names(plan) == std::vector<std::string>{"oci-layout", "index.json", "manifest.json"});
    auto items = oci::parse_docker_archive_manifest(document(plan, "manifest.json"));
    REQUIRE(items.size() == 1);
    CHECK(items[0].repo_tags.empty());
}

// ---- compress.hpp ---------------------------------------------------------------------------

TEST_CASE("zstd: what the compressor wrote decompresses, two frames too, a cut stream is refused", "[archive]") {
    std::string data(3 << 20, 'x');
    for (std::size_t i = 0; i < data.size(); i += 7) data[i] = static_cast<char>(i * 31);
    std::string frames;
    for (int i = 0; i < 2; ++i) {
        auto z = oci::make_compressor([&](const void* p, std::size_t n) { frames.append(static_cast<const char*>(p), n); },
                                      oci::media_type::Compression::Zstd);
        z->write(data.data(), data.size());
        z->finish();
    }
    std::string out;
    oci::ZstdDecompressor d([&](const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); });
    d.write(frames.data(), frames.size());
    d.finish();
    CHECK(out == data + data);

    oci::ZstdDecompressor cut([](const void*, std::size_t) {});
    cut.write(frames.data(), frames.size() / 4);
    CHECK_THROWS_WITH(cut.finish(), "zstd: the stream ends inside a frame (truncated)");
}

// ---- write_image_archive: the output path -----------------------------------------------------

namespace {

// write(2) calls this process has made (proc(5), /proc/pid/io syscw).
std::uint64_t write_syscalls() {
    std::ifstream io("/proc/self/io");
    std::string key;
    std::uint64_t value = 0;
    while (io >> key >> value)
        if (key == "syscw:") return value;
    FAIL("/proc/self/io has no syscw");
    return 0;
}

}  // namespace

TEST_CASE("save: an 8 MiB layer goes out in 1 MiB writes, not one per 512-byte tar block", "[archive]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path / "store");
    std::string layer(8 << 20, '\0');
    for (std::size_t i = 0; i < layer.size(); ++i) layer[i] = static_cast<char>((i * 2654435761u) >> 13);
    oci::Image img;
    img.name = "big:1";
    img.manifest.config = {std::string(oci::media_type::kOciConfig), store.put_blob("{}"), 2, {}, {}, {}, {}};
    img.manifest.layers = {{std::string(oci::media_type::kOciLayerGzip), store.put_blob(layer),
                            static_cast<std::int64_t>(layer.size()), {}, {}, {}, {}}};
    const std::string manifest = "{\"schemaVersion\":2}";
    img.manifest_descriptor = {std::string(oci::media_type::kOciManifest), store.put_blob(manifest),
                               static_cast<std::int64_t>(manifest.size()), {}, {}, {}, {}};
    archive::SaveImage saved{img, {{"big:1", "docker.io/library/big:1", "1"}}};

    aishell::UniqueFd out(::open((dir.path / "out.tar").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    REQUIRE(out.get() >= 0);
    std::uint64_t before = write_syscalls();
    archive::write_image_archive(store, {saved}, out.get(), {});
    std::uint64_t writes = write_syscalls() - before;
    // 8 MiB of layer + documents and headers: 9 blocks (16,400 with 512). The count is the
    // process's (/proc/self/io): the sanitizer build's runtime adds a few writes of its own.
    CHECK(writes < 100);

    // The tar is whole: the layer's bytes follow its header, the end blocks close it, no padding.
    struct stat st {};
    REQUIRE(::fstat(out.get(), &st) == 0);
    std::ifstream in(dir.path / "out.tar", std::ios::binary);
    std::string tar((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(tar.size() == static_cast<std::size_t>(st.st_size));
    CHECK(tar.size() % 512 == 0);
    CHECK(tar.substr(tar.size() - 1024) == std::string(1024, '\0'));
    auto at = tar.find(layer.substr(0, 4096));
    REQUIRE(at != std::string::npos);
    CHECK(at % 512 == 0);
    CHECK(tar.compare(at, layer.size(), layer) == 0);
}
