// manifest.json and repositories of Docker archives (oci/docker_archive.hpp), as `docker save`
// (20.10 and 25) and `podman save --format docker-archive` write them.
#include <catch2/catch.hpp>

#include <functional>
#include <string>

#include "common/error.hpp"
#include "error_message.hpp"
#include "oci/docker_archive.hpp"

namespace oci = aishell::oci;
using aishell::test::message_of;

TEST_CASE("docker archive: manifest.json of docker save 20.10, shared layer and untagged image", "[docker_archive]") {
    const std::string text =
        R"([{"Config":"4f1b.json","RepoTags":["busybox:latest","busybox:1"],"Layers":["aa/layer.tar","bb/layer.tar"]},)"
        R"({"Config":"9c3d.json","RepoTags":null,"Layers":["aa/layer.tar"],"Parent":"sha256:4f1b"}])";
    auto images = oci::parse_docker_archive_manifest(text);
    REQUIRE(images.size() == 2);
    CHECK(images[0] == oci::DockerArchiveImage{"4f1b.json", {"busybox:latest", "busybox:1"}, {"aa/layer.tar", "bb/layer.tar"}});
    CHECK(images[1] == oci::DockerArchiveImage{"9c3d.json", {}, {"aa/layer.tar"}});
}

TEST_CASE("docker archive: Docker 25 manifest.json points into blobs/sha256 and has LayerSources", "[docker_archive]") {
    const std::string text =
        R"([{"Config":"blobs/sha256/ab","RepoTags":["x:1"],"Layers":["blobs/sha256/cd"],)"
        R"("LayerSources":{"sha256:cd":{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":1024,"digest":"sha256:cd"}}}])";
    auto images = oci::parse_docker_archive_manifest(text);
    REQUIRE(images.size() == 1);
    CHECK(images[0].config == "blobs/sha256/ab");
    CHECK(images[0].layers == std::vector<std::string>{"blobs/sha256/cd"});
}

TEST_CASE("docker archive: manifest.json round-trips through its writer", "[docker_archive]") {
    std::vector<oci::DockerArchiveImage> images{{"blobs/sha256/ab", {"aishell:base"}, {"blobs/sha256/cd", "blobs/sha256/ef"}},
                                                {"blobs/sha256/01", {}, {}}};
    std::string text = oci::docker_archive_manifest_to_json(images);
    CHECK(text.find(R"("RepoTags":null)") != std::string::npos);
    CHECK(oci::parse_docker_archive_manifest(text) == images);
}

TEST_CASE("docker archive: malformed manifest.json names what is wrong", "[docker_archive]") {
    CHECK(message_of([] { oci::parse_docker_archive_manifest("{}"); }) == "manifest.json: not a list of images");
    CHECK(message_of([] { oci::parse_docker_archive_manifest("[1]"); }) == "manifest.json: image 1: not an object");
    CHECK(message_of([] { oci::parse_docker_archive_manifest(R"([{"Layers":[]}])"); }) ==
          "manifest.json: image 1: \"Config\" is missing or not a non-empty string");
    CHECK(message_of([] { oci::parse_docker_archive_manifest(R"([{"Config":"a.json","Layers":[]},{"Config":"b.json"}])"); }) ==
          "manifest.json: image 2: \"Layers\" is missing or not a list");
    CHECK(message_of([] { oci::parse_docker_archive_manifest(R"([{"Config":"a","Layers":[""]}])"); }) ==
          "manifest.json: image 1: \"Layers\" holds a value that is not a non-empty string");
    CHECK(message_of([] { oci::parse_docker_archive_manifest(R"([{"Config":"a","Layers":[],"RepoTags":"x"}])"); }) ==
          "manifest.json: image 1: \"RepoTags\" is not a list");
    CHECK(message_of([] { (void)oci::parse_docker_archive_manifest("["); }).starts_with("manifest.json: the file is not valid JSON"));
}

TEST_CASE("docker archive: a manifest.json over the size limit is refused before parsing", "[docker_archive]") {
    std::string huge = "[" + std::string(oci::kMaxDockerArchiveJsonSize, ' ') + "]";
    CHECK(message_of([&] { oci::parse_docker_archive_manifest(huge); }) ==
          "manifest.json: the file is " + std::to_string(huge.size()) + " bytes, over the limit of 4194304");
    std::string deep = std::string(300, '[') + std::string(300, ']');
    CHECK(message_of([&] { oci::parse_docker_archive_manifest(deep); }).find("nested deeper than 256 levels") !=
          std::string::npos);
}

TEST_CASE("docker archive: repositories maps each top layer id to its names", "[docker_archive]") {
    auto names = oci::parse_docker_repositories(R"({"busybox":{"latest":"aa","1":"aa"},"team/app":{"v2":"bb"}})");
    CHECK(names.size() == 2);
    CHECK(names["aa"] == std::vector<std::string>{"busybox:1", "busybox:latest"});
    CHECK(names["bb"] == std::vector<std::string>{"team/app:v2"});
    CHECK(oci::parse_docker_repositories("{}").empty());
    CHECK(message_of([] { oci::parse_docker_repositories("[]"); }) == "repositories: not an object of repositories");
    CHECK(message_of([] { oci::parse_docker_repositories(R"({"a":"b"})"); }) ==
          "repositories: repository \"a\" is not an object of tags");
    CHECK(message_of([] { oci::parse_docker_repositories(R"({"a":{"t":1}})"); }) ==
          "repositories: tag \"a:t\" does not name a layer id");
}
