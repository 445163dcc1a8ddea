// The caller's git identity for a run (`aishell`, run, exec): `git config user.name` and
// `user.email` as git itself resolves them in the current directory (system, global and
// repository config, includes), passed as GIT_AUTHOR_NAME/EMAIL and GIT_COMMITTER_NAME/EMAIL so
// commits made inside carry it.
//
// Running git costs 5 ms of CPU and 7-8 ms of wall time on every start, a third of a warm
// start (docs/performance.md, issue 12), so the answer is remembered in the store's cache
// (cache/git-identity/<FNV-1a of dir and environment>.msgpack: MessagePack, which keeps a
// non-UTF-8 directory name or user.name byte for byte) with the stat data of every file it came from or could
// come from: the git binary, the system and global config files, a `.git` in the current dir
// and each of its parents (a repository appearing or going), every file git reports an entry
// from (`--show-origin`) and every file an include names, and a repository's HEAD when an
// includeIf depends on the branch. While all of that stands, no git runs; any change, or a
// file changed less than two seconds before git read it (a timestamp tick may hide a second
// change), runs git again.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.hpp"

namespace aishell::cli {

namespace fs = std::filesystem;

// One entry of `git config -z --list --show-origin`: "file:PATH\0key\nvalue\0" (a key without a
// value, `[user] name`, has no "\n").
struct GitConfigEntry {
    std::string origin;  // "file:.git/config", "command line:", ...
    std::string key;     // lowercase section and name, subsection as written
    std::string value;
    bool has_value = false;
    bool operator==(const GitConfigEntry&) const = default;
};
std::vector<GitConfigEntry> parse_git_config_listing(std::string_view output);

// user.name and user.email (the last value of each wins, as `git config --get`) as the GIT_*
// variables; nothing for an empty value.
std::vector<std::string> git_identity_env(const std::vector<GitConfigEntry>& entries);

// Where git looks for its configuration from one directory, with one environment.
struct GitConfigScope {
    fs::path cwd;         // absolute
    fs::path home;        // $HOME
    fs::path git_binary;  // the git found on PATH
    std::vector<std::pair<std::string, std::string>> env;  // GIT_* and XDG_CONFIG_HOME, as set
    std::string get(std::string_view name) const;          // "" when unset
};

// The paths whose stat data the remembered identity depends on, each with a kind prefix:
// "f:PATH" a file git reads or may read (stat follows symlinks, as git does), "g:PATH" a `.git`
// whose appearance, kind or identity matters (lstat; a gitdir file's content too).
std::vector<std::string> git_identity_inputs(const GitConfigScope& scope, const std::vector<GitConfigEntry>& entries);

// The stat data of inputs as one string (missing paths included, as missing), and whether any
// of them changed at or after settled_before_ns (CLOCK_REALTIME nanoseconds).
struct InputStats {
    std::string text;
    bool settled = true;
};
InputStats stat_git_identity_inputs(const std::vector<std::string>& inputs, std::int64_t settled_before_ns);

// Started before the container is prepared, read when its environment is put together: a
// remembered answer is read at once; otherwise git runs meanwhile and finish() remembers what
// it said. Nothing when git is not installed, or says nothing.
class GitIdentity {
public:
    GitIdentity() = default;
    GitIdentity(const GitIdentity&) = delete;
    GitIdentity& operator=(const GitIdentity&) = delete;
    GitIdentity(GitIdentity&& other) noexcept;
    GitIdentity& operator=(GitIdentity&&) = delete;
    ~GitIdentity();

    // memo_dir: <store>/cache/git-identity. settle: how old a file's ctime must be for an
    // answer read from it to be remembered.
    static GitIdentity start(const fs::path& memo_dir, std::chrono::nanoseconds settle = std::chrono::seconds(2));
    std::vector<std::string> finish();
    bool ran_git() const { return pid_ >= 0; }

private:
    std::vector<std::string> remember(const std::string& output);

    bool answered_ = false;             // the memo answered: env_ holds the identity
    std::vector<std::string> env_;
    pid_t pid_ = -1;                    // git, while it runs
    UniqueFd out_;
    GitConfigScope scope_;
    fs::path memo_file_;
    std::string memo_key_;
    std::int64_t settled_before_ns_ = 0;
};

}  // namespace aishell::cli
