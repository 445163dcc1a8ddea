// WWW-Authenticate parsing, base64, and the auth files shared with Docker and podman.
#include "registry/auth.hpp"

#include <sys/stat.h>

#include <cctype>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/json_parse.hpp"
#include "oci/json_text.hpp"
#include "registry/reference.hpp"

namespace aishell::registry {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kMaxAuthFile = 4 * 1024 * 1024;

bool is_token_char(char c) {
    // RFC 7230 tchar
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// A cursor over a header value.
struct Scanner {
    std::string_view s;
    std::size_t i = 0;
    bool done() const { return i >= s.size(); }
    void skip_space() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    }
    bool eat(char c) {
        skip_space();
        if (i < s.size() && s[i] == c) {
            ++i;
            return true;
        }
        return false;
    }
    std::string token() {
        skip_space();
        std::size_t start = i;
        while (i < s.size() && is_token_char(s[i])) ++i;
        return std::string(s.substr(start, i - start));
    }
    // token68 (e.g. a Basic challenge's opaque data) also allows '/' and '='.
    std::string token68() {
        skip_space();
        std::size_t start = i;
        while (i < s.size() && (is_token_char(s[i]) || s[i] == '/' || s[i] == '=')) ++i;
        return std::string(s.substr(start, i - start));
    }
    std::string quoted() {  // after the opening quote
        std::string out;
        while (i < s.size() && s[i] != '"') {
            if (s[i] == '\\' && i + 1 < s.size()) ++i;
            out += s[i++];
        }
        if (i < s.size()) ++i;  // closing quote
        return out;
    }
};

}  // namespace

std::vector<Challenge> parse_www_authenticate(std::string_view header) {
    std::vector<Challenge> out;
    Scanner sc{header};
    while (!sc.done()) {
        while (sc.eat(',')) {
        }
        std::string scheme = sc.token();
        if (scheme.empty()) {
            if (sc.done()) break;
            ++sc.i;  // skip a stray character and resynchronize
            continue;
        }
        Challenge ch{lower(scheme), {}};
        // auth-params: name = (token | quoted-string), separated by commas. A name not followed
        // by '=' starts the next challenge.
        for (;;) {
            std::size_t mark = sc.i;
            while (sc.eat(',')) {
            }
            std::string name = sc.token();
            if (name.empty() || !sc.eat('=')) {
                sc.i = mark;
                if (!name.empty() && ch.params.empty()) {
                    // token68 form ("Basic abc=="): not used by registries; skip it.
                    sc.token68();
                }
                break;
            }
            sc.skip_space();
            std::string value;
            if (sc.i < sc.s.size() && sc.s[sc.i] == '"') {
                ++sc.i;
                value = sc.quoted();
            } else {
                value = sc.token68();
            }
            ch.params[lower(name)] = value;
        }
        out.push_back(std::move(ch));
    }
    return out;
}

std::string base64_encode(std::string_view data) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < data.size(); i += 3) {
        unsigned v = (static_cast<unsigned char>(data[i]) << 16) | (static_cast<unsigned char>(data[i + 1]) << 8) |
                     static_cast<unsigned char>(data[i + 2]);
        out += kAlphabet[v >> 18];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += kAlphabet[v & 63];
    }
    if (i < data.size()) {
        unsigned v = static_cast<unsigned char>(data[i]) << 16;
        if (i + 1 < data.size()) v |= static_cast<unsigned char>(data[i + 1]) << 8;
        out += kAlphabet[v >> 18];
        out += kAlphabet[(v >> 12) & 63];
        out += i + 1 < data.size() ? kAlphabet[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    while (!text.empty() && (text.back() == '=' || text.back() == '\n')) text.remove_suffix(1);
    std::string out;
    unsigned buffer = 0;
    int bits = 0;
    for (char c : text) {
        int v = value(c);
        if (v < 0) return std::nullopt;
        buffer = (buffer << 6) | static_cast<unsigned>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((buffer >> bits) & 0xFF);
        }
    }
    if (bits >= 6) return std::nullopt;  // a dangling sextet: truncated input
    return out;
}

std::vector<fs::path> auth_file_search_path() {
    std::vector<fs::path> files;
    if (auto f = get_env("REGISTRY_AUTH_FILE"); f && !f->empty()) files.emplace_back(*f);
    if (auto run = get_env("XDG_RUNTIME_DIR"); run && !run->empty())
        files.push_back(fs::path(*run) / "containers" / "auth.json");
    fs::path home = home_dir();
    files.push_back(home / ".config" / "containers" / "auth.json");
    files.push_back(home / ".docker" / "config.json");
    return files;
}

fs::path auth_file_for_write() {
    if (auto f = get_env("REGISTRY_AUTH_FILE"); f && !f->empty()) return *f;
    std::error_code ec;
    if (auto run = get_env("XDG_RUNTIME_DIR"); run && !run->empty() && fs::is_directory(*run, ec))
        return fs::path(*run) / "containers" / "auth.json";
    return home_dir() / ".docker" / "config.json";
}

bool auth_key_matches(std::string_view key, std::string_view registry) {
    std::string_view k = key;
    if (auto sep = k.find("://"); sep != std::string_view::npos) k.remove_prefix(sep + 3);
    k = k.substr(0, k.find('/'));
    if (k == registry) return true;
    // Docker Hub is stored under its legacy v1 URL by `docker login`.
    if (registry == kDockerHubDomain)
        return k == "index.docker.io" || k == "registry-1.docker.io" || k == "registry.hub.docker.com";
    return false;
}

std::optional<Credentials> credentials_from_auth_json(std::string_view text, std::string_view registry) {
    nlohmann::json doc = oci::parse_json(text);
    if (doc.is_discarded() || !doc.is_object()) throw Error("malformed JSON");
    auto auths = doc.find("auths");
    if (auths == doc.end() || !auths->is_object()) return std::nullopt;
    // An exact key first, then the URL forms.
    const nlohmann::json* found = nullptr;
    if (auto exact = auths->find(std::string(registry)); exact != auths->end()) found = &*exact;
    for (auto it = auths->begin(); !found && it != auths->end(); ++it)
        if (auth_key_matches(it.key(), registry)) found = &it.value();
    if (!found || !found->is_object()) return std::nullopt;
    auto auth = found->find("auth");
    if (auth == found->end() || !auth->is_string() || auth->get<std::string>().empty()) return std::nullopt;
    auto decoded = base64_decode(auth->get<std::string>());
    if (!decoded) throw Error("entry for " + std::string(registry) + ": \"auth\" is not valid base64");
    auto colon = decoded->find(':');
    if (colon == std::string::npos)
        throw Error("entry for " + std::string(registry) + ": \"auth\" is not base64 of user:password");
    return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
}

std::optional<Credentials> find_credentials(std::string_view registry) {
    for (const auto& file : auth_file_search_path()) {
        auto text = read_file_if_exists(file, kMaxAuthFile);
        if (!text) continue;
        auto creds = with_context("read credentials from " + file.string(),
                                  [&] { return credentials_from_auth_json(*text, registry); });
        if (creds) return creds;
    }
    return std::nullopt;
}

bool update_auth_file(const fs::path& path, std::string_view registry, const std::optional<Credentials>& creds) {
    return with_context("update " + path.string(), [&] {
        nlohmann::json doc = nlohmann::json::object();
        if (auto text = read_file_if_exists(path, kMaxAuthFile)) {
            doc = oci::parse_json(*text);
            if (doc.is_discarded() || !doc.is_object()) throw Error("malformed JSON; fix or remove the file");
        }
        if (!doc.contains("auths") || !doc["auths"].is_object()) doc["auths"] = nlohmann::json::object();
        nlohmann::json& auths = doc["auths"];
        bool had = false;
        for (auto it = auths.begin(); it != auths.end();) {
            if (auth_key_matches(it.key(), registry)) {
                had = true;
                it = auths.erase(it);
            } else {
                ++it;
            }
        }
        if (creds) auths[std::string(registry)] = {{"auth", base64_encode(creds->username + ":" + creds->password)}};
        if (!creds && !had) return false;
        make_dirs(path.parent_path(), 0700);
        write_file_atomic(path, oci::json_document(doc, 1, '\t') + "\n", 0600);
        return had || creds.has_value();
    });
}

}  // namespace aishell::registry
