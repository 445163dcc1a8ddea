// The host's side of a run (see host_context.hpp).
#include "cli/host_context.hpp"

#include <sys/stat.h>

#include "common/file.hpp"

namespace aishell::cli {

namespace fs = std::filesystem;

std::vector<std::string> passthrough_env() {
    static constexpr const char* kNames[] = {"TERM",        "COLORTERM",   "LANG",     "LC_ALL",   "TZ",
                                             "http_proxy",  "https_proxy", "no_proxy", "HTTP_PROXY",
                                             "HTTPS_PROXY", "NO_PROXY"};
    std::vector<std::string> out;
    for (const char* name : kNames)
        if (auto value = get_env(name)) out.push_back(std::string(name) + "=" + *value);
    return out;
}

std::optional<SshAgent> ssh_agent() {
    auto path = get_env("SSH_AUTH_SOCK");
    if (!path || path->empty() || path->front() != '/') return std::nullopt;
    struct stat st {};
    if (::stat(path->c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return std::nullopt;
    std::error_code ec;
    fs::path real = fs::canonical(*path, ec);
    if (ec) return std::nullopt;
    return SshAgent{runtime::BindSpec{real, kSshAgentPath, false}, std::string("SSH_AUTH_SOCK=") + kSshAgentPath};
}

}  // namespace aishell::cli
