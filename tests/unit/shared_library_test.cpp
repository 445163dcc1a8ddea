// SharedLibrary: libraries loaded on first use; failures name the library and the package.
#include <catch2/catch.hpp>

#include <archive.h>
#include <curl/curl.h>

#include <string>

#include "common/error.hpp"
#include "common/shared_library.hpp"

using namespace aishell;

TEST_CASE("a missing library is an error naming it and the package to install", "[shared_library]") {
    try {
        SharedLibrary lib("libaishell-does-not-exist.so.0", "libexample0");
        FAIL("dlopen of a missing library succeeded");
    } catch (const Error& e) {
        CHECK(std::string(e.message()).find("cannot load libaishell-does-not-exist.so.0") != std::string::npos);
        CHECK(e.hint() == "install Debian's libexample0 package");
    }
}

TEST_CASE("symbols come from the library, a missing one is an error", "[shared_library]") {
    SharedLibrary zlib("libz.so.1", "zlib1g");
    const char* (*version)() = nullptr;
    zlib.bind(version, "zlibVersion");
    REQUIRE(version != nullptr);
    CHECK(std::string(version()).size() > 0);
    CHECK_THROWS_AS(zlib.symbol("aishell_no_such_symbol"), Error);
}

TEST_CASE("the forwarders reach the real libcurl and libarchive", "[shared_library]") {
    // Not linked: these resolve to src/registry/curl_api.cpp and src/oci/archive_api.cpp.
    CHECK(std::string(curl_easy_strerror(CURLE_COULDNT_CONNECT)) == "Couldn't connect to server");
    struct archive* a = archive_read_new();
    REQUIRE(a != nullptr);
    CHECK(archive_read_support_format_tar(a) == ARCHIVE_OK);
    CHECK(archive_read_free(a) == ARCHIVE_OK);
}
