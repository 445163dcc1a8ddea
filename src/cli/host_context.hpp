// What a run takes from the host it starts on (`aishell`, run, exec) besides the project dir
// (composer::find_project): the environment variables that pass through, the caller's git
// identity and the ssh agent.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"
#include "runtime/mounts.hpp"

namespace aishell::cli {

// The variables a run gets from the host when they are set there (K=V): the terminal's
// (TERM, COLORTERM), the locale and time zone (LANG, LC_ALL, TZ) and the proxies, lower and
// upper case, as podman passes them (--http-proxy).
std::vector<std::string> passthrough_env();

// The caller's git identity (`git config user.name` / `user.email` as git itself resolves them
// in the current directory: global, system and repository config, includes) as
// GIT_AUTHOR_NAME/EMAIL and GIT_COMMITTER_NAME/EMAIL, so commits made inside carry it. git runs
// directly (no shell), started by start() and read by finish(), so that it runs while aishell
// prepares the container; nothing when git is not installed or has no identity.
class GitIdentity {
public:
    GitIdentity() = default;
    GitIdentity(const GitIdentity&) = delete;
    GitIdentity& operator=(const GitIdentity&) = delete;
    ~GitIdentity();
    static GitIdentity start();
    GitIdentity(GitIdentity&& other) noexcept : pid_(other.pid_), out_(std::move(other.out_)) { other.pid_ = -1; }
    std::vector<std::string> finish();

private:
    pid_t pid_ = -1;
    UniqueFd out_;
};

// Parses `git config -z --get-regexp` output ("key\nvalue\0"...; the last value of a key wins,
// as `git config --get`) into the GIT_* variables.
std::vector<std::string> git_identity_env(std::string_view output);

// Where the ssh agent socket is bound inside, and what SSH_AUTH_SOCK says there.
inline constexpr const char* kSshAgentPath = "/run/aishell/ssh-auth.sock";

struct SshAgent {
    runtime::BindSpec bind;
    std::string env;  // SSH_AUTH_SOCK=<kSshAgentPath>
};
// The agent of $SSH_AUTH_SOCK, when that names a socket.
std::optional<SshAgent> ssh_agent();

}  // namespace aishell::cli
