#include "oci/digest.hpp"

#include "common/error.hpp"

namespace aishell::oci {

namespace {

bool is_lower_hex(std::string_view s) {
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

bool is_alnum_lower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// algorithm ::= algorithm-component (algorithm-separator algorithm-component)*
// algorithm-component ::= [a-z0-9]+ ; algorithm-separator ::= [+._-]
bool valid_algorithm(std::string_view a) {
    if (a.empty()) return false;
    bool prev_sep = true;
    for (char c : a) {
        bool sep = c == '+' || c == '.' || c == '_' || c == '-';
        if (sep) {
            if (prev_sep) return false;
        } else if (!is_alnum_lower(c)) {
            return false;
        }
        prev_sep = sep;
    }
    return !prev_sep;
}

// encoded ::= [a-zA-Z0-9=_-]+
bool valid_encoded(std::string_view e) {
    if (e.empty()) return false;
    for (char c : e)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '=' ||
              c == '_' || c == '-'))
            return false;
    return true;
}

// Returns an empty string when text is valid, else why it is not.
std::string validate(std::string_view text) {
    auto colon = text.find(':');
    if (colon == std::string_view::npos) return "missing ':' between algorithm and hex";
    auto algorithm = text.substr(0, colon);
    auto encoded = text.substr(colon + 1);
    if (!valid_algorithm(algorithm)) return "invalid algorithm";
    if (!valid_encoded(encoded)) return "invalid encoded part";
    if (algorithm == "sha256" && (encoded.size() != 64 || !is_lower_hex(encoded)))
        return "sha256 needs 64 lowercase hex digits";
    if (algorithm == "sha512" && (encoded.size() != 128 || !is_lower_hex(encoded)))
        return "sha512 needs 128 lowercase hex digits";
    return {};
}

}  // namespace

Digest Digest::parse(std::string_view text) {
    std::string why = validate(text);
    if (!why.empty()) throw Error("invalid digest \"" + std::string(text.substr(0, 160)) + "\": " + why);
    return Digest(std::string(text));
}

std::optional<Digest> Digest::try_parse(std::string_view text) noexcept {
    try {
        if (!validate(text).empty()) return std::nullopt;
        return Digest(std::string(text));
    } catch (...) {
        return std::nullopt;
    }
}

Digest Digest::sha256_from_hex(std::string_view hex) { return parse("sha256:" + std::string(hex)); }

std::string_view Digest::algorithm() const noexcept {
    std::string_view v(text_);
    return v.substr(0, v.find(':'));
}

std::string_view Digest::encoded() const noexcept {
    std::string_view v(text_);
    auto colon = v.find(':');
    return colon == std::string_view::npos ? std::string_view{} : v.substr(colon + 1);
}

std::string Digest::short_form(std::size_t hex_chars) const {
    return std::string(algorithm()) + ":" + std::string(encoded().substr(0, hex_chars));
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
        throw Error("sha256: cannot initialise OpenSSL digest context");
}

void Sha256::update(const void* data, std::size_t size) {
    if (size == 0) return;
    if (EVP_DigestUpdate(ctx_.get(), data, size) != 1) throw Error("sha256: digest update failed");
    bytes_ += size;
}

Digest Sha256::finish() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1) throw Error("sha256: digest finalisation failed");
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
        hex += digits[md[i] >> 4];
        hex += digits[md[i] & 0xf];
    }
    return Digest::sha256_from_hex(hex);
}

Digest sha256_of(std::string_view data) {
    Sha256 h;
    h.update(data);
    return h.finish();
}

}  // namespace aishell::oci
