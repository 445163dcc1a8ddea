// Registry authentication pieces that need no network: WWW-Authenticate parsing (RFC 7235
// challenges as registries send them), credentials from Docker's and podman's auth files
// (the "auths" -> "auth": base64("user:password") format), and writing that file for
// `aishell login` / `aishell logout`.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aishell::registry {

struct Challenge {
    std::string scheme;                         // lowercased: "bearer", "basic"
    std::map<std::string, std::string> params;  // names lowercased: realm, service, scope, error
    std::string param(const std::string& name) const {
        auto it = params.find(name);
        return it == params.end() ? std::string() : it->second;
    }
};

// Parses one or more WWW-Authenticate header values (several challenges may share one value,
// separated by commas). Quoted strings may contain escaped quotes. Malformed parts are skipped.
std::vector<Challenge> parse_www_authenticate(std::string_view header);

struct Credentials {
    std::string username;
    std::string password;
};

std::string base64_encode(std::string_view data);
std::optional<std::string> base64_decode(std::string_view text);  // nullopt when malformed

// The auth files read, in order: $REGISTRY_AUTH_FILE; ${XDG_RUNTIME_DIR}/containers/auth.json;
// ~/.config/containers/auth.json; ~/.docker/config.json (podman's order).
std::vector<std::filesystem::path> auth_file_search_path();
// The file `aishell login` writes: $REGISTRY_AUTH_FILE, else ${XDG_RUNTIME_DIR}/containers/auth.json
// when XDG_RUNTIME_DIR is set and exists, else ~/.docker/config.json.
std::filesystem::path auth_file_for_write();

// The keys an auth file may use for a registry: "host:port", "https://host:port" (with or
// without a path), and for Docker Hub also "https://index.docker.io/v1/" and friends.
bool auth_key_matches(std::string_view key, std::string_view registry);

// Credentials for registry (a reference's domain, e.g. "docker.io" or "127.0.0.1:5000") from
// the JSON text of one auth file. Throws Error on malformed JSON or a malformed "auth" entry.
std::optional<Credentials> credentials_from_auth_json(std::string_view json, std::string_view registry);
// Searches the files in order; the first one with an entry wins.
std::optional<Credentials> find_credentials(std::string_view registry);

// Adds or replaces (creds) or removes (nullopt) the entry for registry in the auth file,
// keeping every other entry and key. Written atomically, mode 0600, parent dir 0700.
// Returns false when logging out of a registry that had no entry.
bool update_auth_file(const std::filesystem::path& path, std::string_view registry,
                      const std::optional<Credentials>& creds);

}  // namespace aishell::registry
