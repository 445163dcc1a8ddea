// Digest parsing against the OCI descriptor grammar, and streaming SHA-256 (oci/digest.hpp).
#include <catch2/catch.hpp>

#include <string>

#include "common/error.hpp"
#include "oci/digest.hpp"

using aishell::Error;
using aishell::oci::Digest;
using aishell::oci::Sha256;
using aishell::oci::sha256_of;

namespace {
const std::string kEmptySha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const std::string kAbcSha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
}  // namespace

TEST_CASE("digest: valid digests parse and split into algorithm and hex", "[digest]") {
    struct Case {
        std::string text, algorithm;
    };
    auto c = GENERATE(Case{"sha256:" + kEmptySha, "sha256"},
                      Case{"sha512:" + std::string(128, 'a'), "sha512"},
                      Case{"multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", "multihash+base58"},
                      Case{"sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", "sha256+b64u"},
                      Case{"a.b_c-d:X=Y", "a.b_c-d"});
    CAPTURE(c.text);
    Digest d = Digest::parse(c.text);
    CHECK(d.str() == c.text);
    CHECK(d.algorithm() == c.algorithm);
    CHECK(d.encoded() == c.text.substr(c.algorithm.size() + 1));
    CHECK(Digest::try_parse(c.text).has_value());
}

TEST_CASE("digest: malformed digests are refused with the reason", "[digest]") {
    struct Case {
        std::string text, reason;
    };
    auto c = GENERATE(Case{"", "missing ':' between algorithm and hex"},
                      Case{kEmptySha, "missing ':' between algorithm and hex"},
                      Case{"sha256:", "invalid encoded part"},
                      Case{":" + kEmptySha, "invalid algorithm"},
                      Case{"SHA256:" + kEmptySha, "invalid algorithm"},
                      Case{"sha256-:" + kEmptySha, "invalid algorithm"},
                      Case{"sha++256:" + kEmptySha, "invalid algorithm"},
                      Case{"sha256:" + kEmptySha.substr(1), "sha256 needs 64 lowercase hex digits"},
                      Case{"sha256:" + kEmptySha + "0", "sha256 needs 64 lowercase hex digits"},
                      Case{"sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                           "sha256 needs 64 lowercase hex digits"},
                      Case{"sha256:" + std::string(63, 'a') + "g", "sha256 needs 64 lowercase hex digits"},
                      Case{"sha256:../../etc/passwd", "invalid encoded part"},
                      Case{"sha512:" + std::string(64, 'a'), "sha512 needs 128 lowercase hex digits"},
                      Case{"sha256: " + kEmptySha, "invalid encoded part"});
    CAPTURE(c.text);
    CHECK_FALSE(Digest::try_parse(c.text).has_value());
    try {
        Digest::parse(c.text);
        FAIL("parse accepted " << c.text);
    } catch (const Error& e) {
        CHECK_THAT(e.message(), Catch::StartsWith("invalid digest \""));
        CHECK_THAT(e.message(), Catch::EndsWith(c.reason));
    }
}

TEST_CASE("digest: error text for a bad digest is exact", "[digest]") {
    CHECK_THROWS_WITH(Digest::parse("sha256:abc"),
                      "invalid digest \"sha256:abc\": sha256 needs 64 lowercase hex digits");
}

TEST_CASE("digest: sha256_from_hex and short_form", "[digest]") {
    Digest d = Digest::sha256_from_hex(kAbcSha);
    CHECK(d.str() == "sha256:" + kAbcSha);
    CHECK(d.is_sha256());
    CHECK(d.short_form() == "sha256:ba7816bf8f01");
    CHECK(d.short_form(4) == "sha256:ba78");
    CHECK_THROWS_AS(Digest::sha256_from_hex("xyz"), Error);
    CHECK(Digest().empty());
}

TEST_CASE("digest: sha256 of known vectors", "[digest]") {
    CHECK(sha256_of("").str() == "sha256:" + kEmptySha);
    CHECK(sha256_of("abc").str() == "sha256:" + kAbcSha);
}

TEST_CASE("digest: streaming in uneven chunks equals one shot", "[digest]") {
    std::string data;
    for (int i = 0; i < 200000; ++i) data += static_cast<char>('a' + i % 26 + (i / 7) % 3);
    Sha256 h;
    std::size_t pos = 0, step = 1;
    while (pos < data.size()) {
        std::size_t n = std::min(step, data.size() - pos);
        h.update(data.data() + pos, n);
        pos += n;
        step = step * 3 + 1;
    }
    h.update(nullptr, 0);  // empty updates are harmless
    CHECK(h.bytes() == data.size());
    CHECK(h.finish() == sha256_of(data));
}

TEST_CASE("digest: ordering and hashing follow the text", "[digest]") {
    Digest a = sha256_of("a"), b = sha256_of("b");
    CHECK(a != b);
    CHECK(((a < b) != (b < a)));
    CHECK(std::hash<Digest>{}(a) == std::hash<std::string>{}(a.str()));
}
