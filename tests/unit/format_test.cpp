#include <catch2/catch.hpp>

#include "cli/format.hpp"
#include "oci/image.hpp"

using namespace aishell;

TEST_CASE("human_size uses decimal units like podman") {
    CHECK(cli::human_size(0) == "0 B");
    CHECK(cli::human_size(999) == "999 B");
    CHECK(cli::human_size(1000) == "1 kB");
    CHECK(cli::human_size(1234567) == "1.23 MB");
    CHECK(cli::human_size(75'000'000'000) == "75 GB");
}

TEST_CASE("human_age counts back from now") {
    const std::int64_t now = 1'700'000'000;  // 2023-11-14T22:13:20Z
    CHECK(cli::human_age("2023-11-14T22:13:10Z", now) == "10 seconds ago");
    CHECK(cli::human_age("2023-11-14T21:13:20Z", now) == "1 hour ago");
    CHECK(cli::human_age("2023-11-11T22:13:20.123456789Z", now) == "3 days ago");
    CHECK(cli::human_age("2021-11-14T22:13:20Z", now) == "2 years ago");
    CHECK(cli::human_age("", now) == "unknown");
    CHECK(cli::human_age("yesterday", now) == "unknown");
}

TEST_CASE("Table aligns columns") {
    cli::Table t({"NAME", "SIZE"});
    t.add({"aishell:base", "1 MB"});
    CHECK(t.render() == "NAME           SIZE\naishell:base   1 MB\n");
}

TEST_CASE("split_repository_tag separates the tag but not a port") {
    using P = std::pair<std::string, std::string>;
    CHECK(oci::split_repository_tag("aishell:base") == P{"aishell", "base"});
    CHECK(oci::split_repository_tag("127.0.0.1:5000/lib/busybox:1") == P{"127.0.0.1:5000/lib/busybox", "1"});
    CHECK(oci::split_repository_tag("127.0.0.1:5000/lib/busybox") == P{"127.0.0.1:5000/lib/busybox", "<none>"});
    CHECK(oci::split_repository_tag("docker.io/library/debian@sha256:abc") == P{"docker.io/library/debian", "<none>"});
}
