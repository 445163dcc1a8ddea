// Reference parsing and normalization. The grammar follows distribution/reference
// (reference.go): domain components, lowercase path components separated by [._-] runs,
// tags of at most 128 [\w.-] characters, names of at most 255 characters.
#include "registry/reference.hpp"

#include <arpa/inet.h>

#include <cctype>
#include <vector>

#include "common/error.hpp"

namespace aishell::registry {

namespace {

constexpr std::size_t kMaxNameLength = 255;
constexpr std::size_t kMaxTagLength = 128;

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | __ | [-]+
bool valid_path_component(std::string_view c) {
    if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) return false;
    for (std::size_t i = 0; i < c.size();) {
        if (is_lower_alnum(c[i])) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < c.size() && !is_lower_alnum(c[j])) ++j;
        std::string_view sep = c.substr(i, j - i);
        bool dashes = sep.find_first_not_of('-') == std::string_view::npos;
        if (!(sep == "." || sep == "_" || sep == "__" || dashes)) return false;
        i = j;
    }
    return true;
}

// domain-component := [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?
bool valid_domain_component(std::string_view c) {
    if (c.empty() || !is_alnum(c.front()) || !is_alnum(c.back())) return false;
    for (char ch : c)
        if (!is_alnum(ch) && ch != '-') return false;
    return true;
}

bool valid_port(std::string_view p) {
    if (p.empty() || p.size() > 5) return false;
    for (char c : p)
        if (c < '0' || c > '9') return false;
    return true;
}

bool valid_domain(std::string_view d) {
    std::string_view host = d;
    if (!d.empty() && d.front() == '[') {  // [ipv6]:port
        auto close = d.find(']');
        if (close == std::string_view::npos) return false;
        std::string addr(d.substr(1, close - 1));
        in6_addr a6{};
        if (::inet_pton(AF_INET6, addr.c_str(), &a6) != 1) return false;
        std::string_view rest = d.substr(close + 1);
        return rest.empty() || (rest.front() == ':' && valid_port(rest.substr(1)));
    }
    if (auto colon = d.rfind(':'); colon != std::string_view::npos) {
        if (!valid_port(d.substr(colon + 1))) return false;
        host = d.substr(0, colon);
    }
    if (host.empty()) return false;
    std::size_t start = 0;
    for (;;) {
        auto dot = host.find('.', start);
        if (!valid_domain_component(host.substr(start, dot - start))) return false;
        if (dot == std::string_view::npos) return true;
        start = dot + 1;
    }
}

bool valid_tag(std::string_view t) {
    auto word = [](char c) { return is_alnum(c) || c == '_'; };
    if (t.empty() || t.size() > kMaxTagLength || !word(t.front())) return false;
    for (char c : t)
        if (!word(c) && c != '.' && c != '-') return false;
    return true;
}

bool all_lower_hex(std::string_view s) {
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

[[noreturn]] void invalid(std::string_view text, std::string_view why) {
    throw Error("invalid reference \"" + std::string(text) + "\": " + std::string(why),
                "references look like NAME[:TAG][@DIGEST], e.g. debian:bookworm or "
                "registry.example.com:5000/team/app:1.0");
}

// Docker's rule: the first component is a domain when it has a '.' or ':' or is "localhost".
bool looks_like_domain(std::string_view first) {
    return first.find_first_of(".:") != std::string_view::npos || first == "localhost" ||
           (!first.empty() && first.front() == '[');
}

}  // namespace

Reference Reference::parse(std::string_view text) {
    if (text.empty()) invalid(text, "empty reference");
    Reference ref;
    std::string_view rest = text;
    if (auto at = rest.find('@'); at != std::string_view::npos) {
        std::string_view digest_text = rest.substr(at + 1);
        auto digest = oci::Digest::try_parse(digest_text);
        if (!digest || !digest->is_sha256()) invalid(text, "malformed digest \"" + std::string(digest_text) + "\"");
        ref.digest = *digest;
        rest = rest.substr(0, at);
    }
    // Domain: only the first component, only when it looks like one.
    std::string_view remainder = rest;
    if (auto slash = rest.find('/'); slash != std::string_view::npos && looks_like_domain(rest.substr(0, slash))) {
        ref.domain = std::string(rest.substr(0, slash));
        remainder = rest.substr(slash + 1);
        if (!valid_domain(ref.domain)) invalid(text, "invalid registry host \"" + ref.domain + "\"");
    }
    // Tag: after the last ':' of the path part (a ':' before the domain's '/' is a port).
    if (auto colon = remainder.rfind(':'); colon != std::string_view::npos) {
        ref.tag = std::string(remainder.substr(colon + 1));
        remainder = remainder.substr(0, colon);
        if (!valid_tag(ref.tag)) invalid(text, "invalid tag \"" + ref.tag + "\" (at most 128 of [A-Za-z0-9_.-], not starting with . or -)");
    }
    if (remainder.empty()) invalid(text, "missing repository name");
    for (char c : remainder)
        if (c >= 'A' && c <= 'Z') invalid(text, "repository name must be lowercase");
    std::size_t start = 0;
    for (;;) {
        auto slash = remainder.find('/', start);
        std::string_view component = remainder.substr(start, slash - start);
        if (!valid_path_component(component))
            invalid(text, "invalid repository name component \"" + std::string(component) + "\"");
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    ref.path = std::string(remainder);
    if (ref.domain.empty() && ref.path.size() == 64 && all_lower_hex(ref.path))
        invalid(text, "a 64-character hex string is an image ID, not a repository name");
    if (ref.domain.empty() || ref.domain == "index.docker.io") ref.domain = std::string(kDockerHubDomain);
    if (ref.domain == kDockerHubDomain && ref.path.find('/') == std::string::npos) ref.path = "library/" + ref.path;
    if (ref.name().size() > kMaxNameLength) invalid(text, "repository name longer than 255 characters");
    if (ref.tag.empty() && !ref.digest) ref.tag = "latest";
    return ref;
}

std::string Reference::str() const {
    std::string s = name();
    if (!tag.empty()) s += ":" + tag;
    if (digest) s += "@" + digest->str();
    return s;
}

std::string Reference::api_host() const {
    return is_docker_hub() ? std::string(kDockerHubApiHost) : domain;
}

bool names_registry(std::string_view text) {
    auto slash = text.find('/');
    return slash != std::string_view::npos && looks_like_domain(text.substr(0, slash));
}

std::string host_without_port(std::string_view host_port) {
    if (!host_port.empty() && host_port.front() == '[') {
        auto close = host_port.find(']');
        return std::string(host_port.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1));
    }
    auto colon = host_port.find(':');
    return std::string(host_port.substr(0, colon));
}

bool is_loopback_host(std::string_view host_port) {
    std::string host = host_without_port(host_port);
    if (host == "localhost" || host == "::1") return true;
    in_addr a4{};
    if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    return false;
}

}  // namespace aishell::registry
