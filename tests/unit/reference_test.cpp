// Image references: distribution's grammar and Docker's normalization.
#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "registry/archive_name.hpp"
#include "registry/reference.hpp"

using aishell::Error;
using aishell::registry::Reference;

namespace {
std::string normalized(const char* text) { return Reference::parse(text).str(); }
const char* kDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
}  // namespace

TEST_CASE("reference: Docker Hub names get docker.io, library/ and :latest", "[reference]") {
    CHECK(normalized("debian") == "docker.io/library/debian:latest");
    CHECK(normalized("debian:bookworm-slim") == "docker.io/library/debian:bookworm-slim");
    CHECK(normalized("team/app") == "docker.io/team/app:latest");
    CHECK(normalized("docker.io/debian") == "docker.io/library/debian:latest");
    CHECK(normalized("docker.io/library/debian:12") == "docker.io/library/debian:12");
    CHECK(normalized("index.docker.io/library/debian") == "docker.io/library/debian:latest");
    auto ref = Reference::parse("debian");
    CHECK(ref.domain == "docker.io");
    CHECK(ref.path == "library/debian");
    CHECK(ref.api_host() == "registry-1.docker.io");
    CHECK(ref.is_docker_hub());
}

TEST_CASE("reference: a first component with '.', ':' or localhost is a registry", "[reference]") {
    CHECK(normalized("127.0.0.1:5000/repo") == "127.0.0.1:5000/repo:latest");
    CHECK(normalized("localhost/repo:1") == "localhost/repo:1");
    CHECK(normalized("localhost:5000/a/b/c:tag") == "localhost:5000/a/b/c:tag");
    CHECK(normalized("quay.io/team/app:v1.2") == "quay.io/team/app:v1.2");
    auto ref = Reference::parse("host.example:5000/team/app:1");
    CHECK(ref.domain == "host.example:5000");
    CHECK(ref.path == "team/app");
    CHECK(ref.tag == "1");
    CHECK(ref.api_host() == "host.example:5000");
    CHECK_FALSE(ref.is_docker_hub());
    // "library" is added only for Docker Hub.
    CHECK(Reference::parse("quay.io/app").path == "app");
}

TEST_CASE("reference: digests, alone or with a tag", "[reference]") {
    auto by_digest = Reference::parse(std::string("busybox@") + kDigest);
    CHECK(by_digest.tag.empty());
    REQUIRE(by_digest.digest);
    CHECK(by_digest.digest->str() == kDigest);
    CHECK(by_digest.manifest_ref() == kDigest);
    CHECK(by_digest.str() == std::string("docker.io/library/busybox@") + kDigest);

    auto both = Reference::parse(std::string("127.0.0.1:5000/lib/busybox:1@") + kDigest);
    CHECK(both.tag == "1");
    CHECK(both.manifest_ref() == kDigest);  // the digest wins over the tag
    CHECK(both.str() == std::string("127.0.0.1:5000/lib/busybox:1@") + kDigest);
}

TEST_CASE("reference: malformed references are refused with the reference in the message", "[reference]") {
    for (const char* bad : {"", "Debian", "debian:", ":tag", "repo@sha256:abc", "repo@md5:0123",
                            "repo//x", "repo/", "/repo", "a..b/c", "repo:tag:tag", "repo:-tag",
                            "host:port/repo", "re po", "repo@", "UPPER.example/Repo"}) {
        INFO(bad);
        try {
            Reference::parse(bad);
            FAIL("accepted");
        } catch (const Error& e) {
            CHECK_THAT(e.message(), Catch::Contains("invalid reference"));
        }
    }
    // A tag is at most 128 characters.
    CHECK_THROWS_AS(Reference::parse("repo:" + std::string(129, 'a')), Error);
    CHECK_NOTHROW(Reference::parse("repo:" + std::string(128, 'a')));
}

TEST_CASE("reference: separators inside path components", "[reference]") {
    CHECK(normalized("a/b_c/d__e/f-g/h.i") == "docker.io/a/b_c/d__e/f-g/h.i:latest");
    CHECK(normalized("a/b---c") == "docker.io/a/b---c:latest");
    CHECK_THROWS_AS(Reference::parse("a/b___c"), Error);
    CHECK_THROWS_AS(Reference::parse("a/-b"), Error);
    CHECK_THROWS_AS(Reference::parse("a/b-"), Error);
}

TEST_CASE("reference: loopback hosts allow plain HTTP", "[reference]") {
    using aishell::registry::host_without_port;
    using aishell::registry::is_loopback_host;
    CHECK(is_loopback_host("localhost"));
    CHECK(is_loopback_host("localhost:5000"));
    CHECK(is_loopback_host("127.0.0.1:5000"));
    CHECK(is_loopback_host("127.1.2.3"));
    CHECK(is_loopback_host("[::1]:5000"));
    CHECK_FALSE(is_loopback_host("128.0.0.1"));
    CHECK_FALSE(is_loopback_host("127.0.0.1.example.com"));
    CHECK_FALSE(is_loopback_host("docker.io"));
    CHECK_FALSE(is_loopback_host("localhost.evil.com:5000"));
    CHECK(host_without_port("[::1]:5000") == "::1");
    CHECK(host_without_port("host:80") == "host");
    CHECK(host_without_port("host") == "host");
}

TEST_CASE("reference: familiar names drop docker.io and library/ as Docker shows them", "[reference]") {
    using aishell::registry::familiar_name;
    CHECK(familiar_name(Reference::parse("docker.io/library/debian:12")) == "debian");
    CHECK(familiar_name(Reference::parse("team/app")) == "team/app");
    CHECK(familiar_name(Reference::parse("library/team/app")) == "library/team/app");
    CHECK(familiar_name(Reference::parse("127.0.0.1:5000/busybox")) == "127.0.0.1:5000/busybox");
    CHECK(familiar_name(Reference::parse("localhost/library/x")) == "localhost/library/x");
}

TEST_CASE("reference: archive names are RepoTags, the containerd name and the tag", "[reference][archive]") {
    using aishell::oci::image_archive::ArchiveName;
    using aishell::registry::archive_name;
    CHECK(archive_name("aishell:base") == ArchiveName{"aishell:base", "docker.io/library/aishell:base", "base"});
    CHECK(archive_name("b10") == ArchiveName{"b10:latest", "docker.io/library/b10:latest", "latest"});
    CHECK(archive_name("docker.io/library/busybox:latest") ==
          ArchiveName{"busybox:latest", "docker.io/library/busybox:latest", "latest"});
    CHECK(archive_name("127.0.0.1:5000/team/app:1.2") ==
          ArchiveName{"127.0.0.1:5000/team/app:1.2", "127.0.0.1:5000/team/app:1.2", "1.2"});
    std::string by_digest = std::string("docker.io/library/busybox@") + kDigest;
    CHECK(archive_name(by_digest) == ArchiveName{"", by_digest, ""});
    std::string both = std::string("busybox:1@") + kDigest;
    CHECK(archive_name(both) == ArchiveName{"busybox:1", "docker.io/library/busybox:1@" + std::string(kDigest), "1"});
    CHECK_THROWS_AS(archive_name("Not A Name"), Error);
}
