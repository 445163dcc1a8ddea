// `--secret` and `--ssh` of aishell build, the caller's side of RUN --mount=type=secret|ssh
// (build_mounts.hpp): buildx's flag syntax, the sources checked before the build starts, a
// secret read when its step runs.
#include "composer/build_mounts.hpp"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <filesystem>
#include <set>

#include "common/error.hpp"
#include "common/file.hpp"
#include "composer/instructions.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kMaxSecretSize = 500 * 1024;  // BuildKit's secretsprovider.MaxSecretSize

}  // namespace

SecretSource parse_secret_flag(const std::string& value, const std::function<bool(const std::string&)>& env_exists) {
    SecretSource s;
    std::string type;
    const std::string what = "invalid --secret \"" + value + "\"";
    const std::string hint = "write --secret id=NAME,src=FILE or --secret id=NAME,env=VAR";
    for (const auto& field : csv_fields(value)) {
        auto eq = field.find('=');
        if (eq == std::string::npos) throw Error(what + ": field '" + field + "' must be a key=value pair", hint);
        std::string key = field.substr(0, eq), v = field.substr(eq + 1);
        for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (key == "type") {
            if (v != "file" && v != "env") throw Error(what + ": unsupported secret type \"" + v + "\"", "type=file or type=env");
            type = v;
        } else if (key == "id") {
            s.id = v;
        } else if (key == "source" || key == "src") {
            s.file = v;
        } else if (key == "env") {
            s.env = v;
        } else {
            throw Error(what + ": unexpected key '" + key + "' in '" + field + "'", "keys: id, src (source), env, type");
        }
    }
    if (type == "env" && s.env.empty()) {
        s.env = s.file;
        s.file.clear();
    }
    if (s.id.empty()) throw Error(what + ": the secret has no id", hint);
    if (!s.file.empty() && !s.env.empty()) throw Error(what + ": both a file and an env source", hint);
    if (type == "file" && s.file.empty()) s.file = s.id;
    if (s.file.empty() && s.env.empty()) {
        // secretsprovider: a bare id is a variable when one is set, else a file.
        if (env_exists(s.id)) s.env = s.id;
        else s.file = s.id;
    }
    return s;
}

void check_secret_sources(const std::vector<SecretSource>& secrets) {
    std::set<std::string> ids;
    for (const auto& s : secrets) {
        if (!ids.insert(s.id).second)
            throw Error("--secret id=" + s.id + " is given twice", "give each secret a distinct id");
        if (s.file.empty()) continue;
        struct stat st {};
        if (::stat(s.file.c_str(), &st) != 0)
            throw Error(SystemError(errno, "stat", s.file).message()).add_context("--secret id=" + s.id);
        if (!S_ISREG(st.st_mode)) throw Error("--secret id=" + s.id + ": " + s.file + " is not a regular file");
        if (static_cast<std::uint64_t>(st.st_size) > kMaxSecretSize)
            throw Error("--secret id=" + s.id + ": " + s.file + " is too big (" + std::to_string(st.st_size) +
                            " bytes)", "secrets are at most 500 KiB, as in BuildKit");
    }
}

std::optional<std::string> read_secret(const SecretSource& secret) {
    if (!secret.env.empty()) return get_env(secret.env.c_str());
    try {
        return read_file(secret.file, kMaxSecretSize);
    } catch (Error& e) {
        e.add_context("read secret " + secret.id);
        throw;
    }
}

SshSource parse_ssh_flag(const std::string& value, const std::optional<std::string>& auth_sock) {
    auto eq = value.find('=');
    SshSource s;
    s.id = value.substr(0, eq);
    if (s.id.empty()) s.id = "default";
    std::string path = eq == std::string::npos ? "" : value.substr(eq + 1);
    if (path.find(',') != std::string::npos)
        throw Error("invalid --ssh \"" + value + "\": more than one socket or key for id " + s.id,
                    "give one agent socket per id: --ssh ID=SOCKET");
    if (path.empty()) path = auth_sock.value_or("");
    if (path.empty())
        throw Error("invalid --ssh \"" + value + "\": invalid empty ssh agent socket",
                    "make sure SSH_AUTH_SOCK is set, or write --ssh " + s.id + "=SOCKET");
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw Error("invalid --ssh \"" + value + "\": " + SystemError(errno, "stat", path).message(),
                    "start ssh-agent (SSH_AUTH_SOCK) or name an agent socket");
    if (!S_ISSOCK(st.st_mode))
        throw Error("invalid --ssh \"" + value + "\": " + path + " is not a socket (forwarding key files is not supported)",
                    "load the key into ssh-agent (ssh-add " + path + ") and pass --ssh " + s.id);
    s.socket = fs::absolute(path).lexically_normal().string();
    return s;
}

}  // namespace aishell::composer
