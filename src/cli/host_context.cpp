// The host's side of a run (see host_context.hpp).
#include "cli/host_context.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "common/file.hpp"

extern char** environ;

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

std::vector<std::string> git_identity_env(std::string_view output) {
    std::optional<std::string> name, email;
    while (!output.empty()) {
        auto end = output.find('\0');
        std::string_view item = output.substr(0, end);
        output = end == std::string_view::npos ? std::string_view() : output.substr(end + 1);
        auto nl = item.find('\n');
        if (nl == std::string_view::npos) continue;  // a key without a value (`[user] name`)
        std::string_view key = item.substr(0, nl), value = item.substr(nl + 1);
        if (key == "user.name") name = std::string(value);
        else if (key == "user.email") email = std::string(value);
    }
    std::vector<std::string> env;
    if (name && !name->empty()) env.insert(env.end(), {"GIT_AUTHOR_NAME=" + *name, "GIT_COMMITTER_NAME=" + *name});
    if (email && !email->empty()) env.insert(env.end(), {"GIT_AUTHOR_EMAIL=" + *email, "GIT_COMMITTER_EMAIL=" + *email});
    return env;
}

GitIdentity GitIdentity::start() {
    GitIdentity g;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return g;
    UniqueFd read_end(fds[0]), write_end(fds[1]);
    posix_spawn_file_actions_t actions;
    if (::posix_spawn_file_actions_init(&actions) != 0) return g;
    ::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    ::posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
    ::posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    // -z: values may hold newlines; one process for both keys (it runs on every start).
    const char* argv[] = {"git", "config", "-z", "--get-regexp", "^user\\.(name|email)$", nullptr};
    pid_t pid = -1;
    int rc = ::posix_spawnp(&pid, "git", &actions, nullptr, const_cast<char* const*>(argv), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return g;  // no git: no identity to pass
    g.pid_ = pid;
    g.out_ = std::move(read_end);
    return g;
}

std::vector<std::string> GitIdentity::finish() {
    if (pid_ < 0) return {};
    std::string output;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(out_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || output.size() > (1 << 16)) break;
        output.append(buf, static_cast<std::size_t>(n));
    }
    out_.reset();
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    pid_ = -1;
    // Status 1: no such key. Anything but a clean exit: nothing trusted from it.
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return {};
    return git_identity_env(output);
}

GitIdentity::~GitIdentity() {
    if (pid_ < 0) return;
    out_.reset();  // git gets EPIPE if it is still writing
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
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
