// What a run takes from the host it starts on (`aishell`, run, exec) besides the project dir
// (composer::find_project): the environment variables that pass through and the ssh agent (the
// caller's git identity: git_identity.hpp).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "runtime/mounts.hpp"

namespace aishell::cli {

// The variables a run gets from the host when they are set there (K=V): the terminal's
// (TERM, COLORTERM), the locale and time zone (LANG, LC_ALL, TZ) and the proxies, lower and
// upper case, as podman passes them (--http-proxy).
std::vector<std::string> passthrough_env();

// Where the ssh agent socket is bound inside, and what SSH_AUTH_SOCK says there.
inline constexpr const char* kSshAgentPath = "/run/aishell/ssh-auth.sock";

struct SshAgent {
    runtime::BindSpec bind;
    std::string env;  // SSH_AUTH_SOCK=<kSshAgentPath>
};
// The agent of $SSH_AUTH_SOCK, when that names a socket.
std::optional<SshAgent> ssh_agent();

}  // namespace aishell::cli
