// Platform parsing, the host platform, and matching with variants (oci/types.hpp).
#include <catch2/catch.hpp>

#include <sys/utsname.h>

#include <string>

#include "common/error.hpp"
#include "oci/types.hpp"

using aishell::Error;
using aishell::oci::Platform;
using aishell::oci::platform_match_score;
using aishell::oci::platform_matches;

TEST_CASE("platform: parse normalizes spellings the way containerd does", "[platform]") {
    struct Case {
        std::string text, os, arch, variant, str;
    };
    auto c = GENERATE(Case{"linux/amd64", "linux", "amd64", "", "linux/amd64"},
                      Case{"linux/x86_64", "linux", "amd64", "", "linux/amd64"},
                      Case{"linux/aarch64", "linux", "arm64", "", "linux/arm64"},
                      Case{"linux/arm64/v8", "linux", "arm64", "", "linux/arm64"},
                      Case{"linux/arm/v7", "linux", "arm", "v7", "linux/arm/v7"},
                      Case{"windows/amd64", "windows", "amd64", "", "windows/amd64"});
    CAPTURE(c.text);
    Platform p = Platform::parse(c.text);
    CHECK(p.os == c.os);
    CHECK(p.architecture == c.arch);
    CHECK(p.variant == c.variant);
    CHECK(p.str() == c.str);
}

TEST_CASE("platform: malformed platforms are refused with a hint", "[platform]") {
    auto text = GENERATE(std::string(""), std::string("linux"), std::string("linux/"), std::string("/amd64"),
                         std::string("linux//v7"), std::string("linux/arm/v7/extra"));
    CAPTURE(text);
    try {
        Platform::parse(text);
        FAIL("accepted " << text);
    } catch (const Error& e) {
        CHECK(e.message() == "invalid platform \"" + text + "\"");
        CHECK(e.hint() == "use os/arch[/variant], e.g. linux/arm64");
    }
}

TEST_CASE("platform: host maps uname's machine to GOARCH names", "[platform]") {
    struct utsname u {};
    REQUIRE(::uname(&u) == 0);
    std::string machine = u.machine;
    Platform host = Platform::host();
    CHECK(host.os == "linux");
    if (machine == "x86_64") {
        CHECK(host.str() == "linux/amd64");
    } else if (machine == "aarch64") {
        CHECK(host.str() == "linux/arm64/v8");
    } else if (machine == "armv7l") {
        CHECK(host.str() == "linux/arm/v7");
    } else {
        CHECK_FALSE(host.architecture.empty());
    }
    // The host always accepts an image built for exactly its own platform.
    CHECK(platform_matches(host, host));
}

TEST_CASE("platform: matching with variants", "[platform]") {
    struct Case {
        std::string wanted, candidate;
        bool matches;
    };
    auto c = GENERATE(Case{"linux/amd64", "linux/amd64", true},
                      Case{"linux/amd64", "linux/arm64", false},
                      Case{"linux/amd64", "windows/amd64", false},
                      Case{"linux/arm64", "linux/arm64/v8", true},
                      Case{"linux/arm64/v8", "linux/arm64", true},
                      Case{"linux/arm/v7", "linux/arm/v7", true},
                      Case{"linux/arm/v7", "linux/arm/v6", true},   // a v7 CPU runs v6 code
                      Case{"linux/arm/v7", "linux/arm/v5", true},
                      Case{"linux/arm/v6", "linux/arm/v7", false},  // but not the other way
                      Case{"linux/arm", "linux/arm/v6", true},      // no variant asked: any will do
                      Case{"linux/arm/v7", "linux/arm", true},      // image does not say
                      Case{"linux/arm64/v9", "linux/arm64/v8", true},   // v8 is arm64's baseline
                      Case{"linux/arm64/v8", "linux/arm64/v9", false},
                      Case{"linux/amd64/v3", "linux/amd64/v2", true},   // x86-64 levels run older ones
                      Case{"linux/amd64/v2", "linux/amd64/v3", false},
                      Case{"linux/amd64", "linux/amd64/v1", true},
                      Case{"linux/amd64/v1", "linux/amd64/v2", false});
    CAPTURE(c.wanted, c.candidate);
    Platform wanted = Platform::parse(c.wanted);
    Platform candidate = Platform::parse(c.candidate);
    CHECK(platform_matches(wanted, candidate) == c.matches);
    CHECK((platform_match_score(wanted, candidate) >= 0) == c.matches);
}

TEST_CASE("platform: raw v8 from a manifest descriptor matches an arm64 host", "[platform]") {
    // Descriptors are parsed verbatim (no normalization): {"architecture":"arm64","variant":"v8"}.
    Platform host{"linux", "arm64", "v8", "", {}};
    Platform plain{"linux", "arm64", "", "", {}};
    CHECK(platform_matches(host, plain));
    CHECK(platform_matches(plain, host));
    CHECK(platform_match_score(host, plain) == platform_match_score(host, host));
}

TEST_CASE("platform: score prefers the exact variant, then the newest compatible one", "[platform]") {
    Platform v7 = Platform::parse("linux/arm/v7");
    int exact = platform_match_score(v7, Platform::parse("linux/arm/v7"));
    int unspecified = platform_match_score(v7, Platform::parse("linux/arm"));
    int v6 = platform_match_score(v7, Platform::parse("linux/arm/v6"));
    int v5 = platform_match_score(v7, Platform::parse("linux/arm/v5"));
    CHECK(exact > unspecified);
    CHECK(unspecified > v6);
    CHECK(v6 > v5);
    CHECK(v5 >= 0);
    CHECK(platform_match_score(v7, Platform::parse("linux/arm64")) == -1);
}
