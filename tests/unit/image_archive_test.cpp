// The archive side of `aishell load` that needs no store: member names and links
// (oci/image_archive.hpp). Whole archives, good and hostile, are in tests/integration/test_load.py.
#include <catch2/catch.hpp>

#include <functional>
#include <map>
#include <string>

#include "common/error.hpp"
#include "error_message.hpp"
#include "oci/image_archive.hpp"

namespace oci = aishell::oci;
using aishell::test::message_of;

namespace {

using Links = std::map<std::string, std::string>;

}  // namespace

TEST_CASE("image archive: member names are cleaned lexically", "[image_archive]") {
    CHECK(oci::clean_archive_name("manifest.json") == "manifest.json");
    CHECK(oci::clean_archive_name("./blobs//sha256/ab/") == "blobs/sha256/ab");
    CHECK(oci::clean_archive_name("./") == "");
    CHECK(oci::clean_archive_name("a/./b") == "a/b");
}

TEST_CASE("image archive: absolute names and .. are refused", "[image_archive]") {
    CHECK(message_of([] { (void)oci::clean_archive_name("/etc/passwd"); }) ==
          "absolute member names are not allowed in an image archive");
    for (const char* name : {"../x", "a/../b", "a/..", "./.."})
        CHECK(message_of([&] { (void)oci::clean_archive_name(name); }) ==
              "member names with \"..\" are not allowed in an image archive");
}

TEST_CASE("image archive: Docker's layer.tar symlinks resolve inside the archive", "[image_archive]") {
    Links symlinks{{"b/layer.tar", "../a/layer.tar"}, {"c/layer.tar", "../b/layer.tar"}, {"d/layer.tar", "./x/../../a/layer.tar"}};
    CHECK(oci::resolve_archive_link(symlinks, {}, "c/layer.tar") == "a/layer.tar");
    CHECK(oci::resolve_archive_link(symlinks, {}, "a/layer.tar") == "a/layer.tar");
    CHECK(oci::resolve_archive_link(symlinks, {}, "d/layer.tar") == "a/layer.tar");
    Links hardlinks{{"e/layer.tar", "c/layer.tar"}};  // root-relative, as tar records hardlinks
    CHECK(oci::resolve_archive_link(symlinks, hardlinks, "e/layer.tar") == "a/layer.tar");
}

TEST_CASE("image archive: links out of the archive and loops are refused", "[image_archive]") {
    CHECK(message_of([] { (void)oci::resolve_archive_link({{"a/layer.tar", "../../etc/passwd"}}, {}, "a/layer.tar"); }) ==
          "symlink 'a/layer.tar' -> '../../etc/passwd' points out of the archive");
    CHECK(message_of([] { (void)oci::resolve_archive_link({{"a/layer.tar", "/etc/passwd"}}, {}, "a/layer.tar"); }) ==
          "symlink 'a/layer.tar' -> '/etc/passwd' points out of the archive");
    CHECK(message_of([] { (void)oci::resolve_archive_link({{"a", ".."}}, {}, "a"); }) ==
          "symlink 'a' -> '..' points out of the archive");
    Links loop{{"a/layer.tar", "../b/layer.tar"}, {"b/layer.tar", "../a/layer.tar"}};
    CHECK(message_of([&] { (void)oci::resolve_archive_link(loop, {}, "a/layer.tar"); }) ==
          "symlink 'a/layer.tar': more than 40 links (a loop)");
    CHECK(message_of([] { (void)oci::resolve_archive_link({}, {{"x", "x"}}, "x"); }) ==
          "symlink 'x': more than 40 links (a loop)");
    // 40 links in a row are followed; 41 are a loop.
    Links chain;
    for (int i = 0; i < 41; ++i) chain["l" + std::to_string(i)] = "l" + std::to_string(i + 1);
    CHECK(oci::resolve_archive_link(chain, {}, "l1") == "l41");
    CHECK(message_of([&] { (void)oci::resolve_archive_link(chain, {}, "l0"); }) == "symlink 'l0': more than 40 links (a loop)");
}
