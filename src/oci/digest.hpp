// Content digests (OCI image-spec descriptor.md "Digests"): parsing, validation and streaming
// SHA-256 with OpenSSL's EVP API. A digest is always computed over the bytes as received.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace aishell::oci {

class Digest {
public:
    Digest() = default;
    // "algorithm:encoded". Grammar from the image spec; sha256 must be 64 lowercase hex and
    // sha512 128. Other registered-looking algorithms parse but the store refuses them.
    static Digest parse(std::string_view text);                      // throws Error
    static std::optional<Digest> try_parse(std::string_view text) noexcept;
    static Digest sha256_from_hex(std::string_view hex);            // throws Error

    const std::string& str() const noexcept { return text_; }
    std::string_view algorithm() const noexcept;
    std::string_view encoded() const noexcept;  // the hex part
    bool is_sha256() const noexcept { return algorithm() == "sha256"; }
    bool empty() const noexcept { return text_.empty(); }
    // "sha256:0123456789ab" for humans.
    std::string short_form(std::size_t hex_chars = 12) const;

    friend bool operator==(const Digest&, const Digest&) = default;
    friend auto operator<=>(const Digest& a, const Digest& b) { return a.text_ <=> b.text_; }

private:
    explicit Digest(std::string text) : text_(std::move(text)) {}
    std::string text_;
};

// Streaming SHA-256.
class Sha256 {
public:
    Sha256();
    void update(const void* data, std::size_t size);
    void update(std::string_view data) { update(data.data(), data.size()); }
    Digest finish();  // may be called once
    std::uint64_t bytes() const noexcept { return bytes_; }

private:
    struct CtxDeleter {
        void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
    };
    std::unique_ptr<EVP_MD_CTX, CtxDeleter> ctx_;
    std::uint64_t bytes_ = 0;
};

Digest sha256_of(std::string_view data);

}  // namespace aishell::oci

template <>
struct std::hash<aishell::oci::Digest> {
    std::size_t operator()(const aishell::oci::Digest& d) const noexcept {
        return std::hash<std::string>{}(d.str());
    }
};
