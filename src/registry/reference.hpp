// Image references ("debian", "host:5000/team/app:1.2", "repo@sha256:...") parsed with the
// grammar of distribution's reference package and normalized as Docker does: no domain means
// docker.io, a single-component Docker Hub path gets "library/", no tag and no digest means
// ":latest". Also the mapping from a reference's domain to the host its API is served on.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "oci/digest.hpp"

namespace aishell::registry {

inline constexpr std::string_view kDockerHubDomain = "docker.io";
inline constexpr std::string_view kDockerHubApiHost = "registry-1.docker.io";

struct Reference {
    std::string domain;  // "docker.io", "127.0.0.1:5000", "localhost", "[::1]:5000"
    std::string path;    // "library/debian", "team/app"
    std::string tag;     // may be empty when digest is set
    std::optional<oci::Digest> digest;

    // Parses and normalizes; throws Error("invalid reference \"X\": why").
    static Reference parse(std::string_view text);

    std::string name() const { return domain + "/" + path; }  // "docker.io/library/debian"
    // The normalized form, used as the image's name in the store:
    // "docker.io/library/debian:latest", "host/repo@sha256:...", "host/repo:tag@sha256:...".
    std::string str() const;
    // What to ask the registry for: the digest when there is one (it wins over the tag).
    std::string manifest_ref() const { return digest ? digest->str() : tag; }
    // The host:port that serves the registry API for this domain.
    std::string api_host() const;
    bool is_docker_hub() const { return domain == kDockerHubDomain; }
};

// True when text names its registry ("host:5000/app", "localhost/app", "docker.io/app"), false
// for a name that only normalization sends to Docker Hub ("debian", "aishell:base").
bool names_registry(std::string_view text);

// True for registries on this machine: localhost, 127.0.0.0/8 and ::1 (with or without port).
// Plain HTTP is allowed only for these (or with --tls-verify=false).
bool is_loopback_host(std::string_view host_port);

// "host:port" -> "host"; "[::1]:5000" -> "::1".
std::string host_without_port(std::string_view host_port);

}  // namespace aishell::registry
