// The caller's git identity, remembered by stat data (see git_identity.hpp).
#include "cli/git_identity.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/stable_hash.hpp"
#include "oci/json_text.hpp"
#include "runtime/host_check.hpp"

extern char** environ;

namespace aishell::cli {

namespace {

constexpr int kMemoVersion = 1;
// A listing longer than this is not read to its end: no identity is trusted from it.
constexpr std::size_t kMaxListing = 4u << 20;

GitConfigScope current_scope(fs::path git) {
    GitConfigScope s;
    std::error_code ec;
    s.cwd = fs::current_path(ec);
    s.home = get_env("HOME").value_or("");
    s.git_binary = std::move(git);
    for (char** e = environ; *e; ++e) {
        std::string_view kv(*e);
        auto eq = kv.find('=');
        if (eq == std::string_view::npos) continue;
        std::string_view name = kv.substr(0, eq);
        if (name.starts_with("GIT_") || name == "XDG_CONFIG_HOME")
            s.env.emplace_back(std::string(name), std::string(kv.substr(eq + 1)));
    }
    std::sort(s.env.begin(), s.env.end());
    return s;
}

// What names one memo: the directory, the binary and every variable that steers git's lookup.
std::string memo_key(const GitConfigScope& s) {
    std::string key = s.cwd.string() + '\0' + s.home.string() + '\0' + s.git_binary.string();
    for (const auto& [name, value] : s.env) key += '\0' + name + '=' + value;
    return key;
}

// The nearest directory at or above cwd that holds a .git, as git's discovery finds it.
std::optional<fs::path> repository_top(const fs::path& cwd) {
    for (fs::path dir = cwd;; dir = dir.parent_path()) {
        struct stat st {};
        if (::lstat((dir / ".git").c_str(), &st) == 0) return dir;
        if (dir == dir.root_path() || dir.parent_path() == dir) return std::nullopt;
    }
}

// The git dir of a work tree top: .git itself, or where a gitdir file (worktrees, submodules)
// points.
fs::path git_dir_of(const fs::path& top) {
    fs::path dot_git = top / ".git";
    struct stat st {};
    if (::lstat(dot_git.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        auto text = read_file_if_exists(dot_git, 4096);
        if (text && text->starts_with("gitdir: ")) {
            std::string target = text->substr(8);
            while (!target.empty() && (target.back() == '\n' || target.back() == '\r')) target.pop_back();
            fs::path p(target);
            return p.is_absolute() ? p : top / p;
        }
    }
    return dot_git;
}

// An include's path as git resolves it: ~/ from HOME, a relative path from the including
// file's directory.
fs::path include_target(const std::string& value, const fs::path& includer, const fs::path& home) {
    if (value == "~") return home;
    if (value.starts_with("~/")) return home / value.substr(2);
    fs::path p(value);
    return p.is_absolute() ? p : includer.parent_path() / p;
}

std::string stat_line(char kind, const std::string& path, const struct stat& st) {
    std::string line(1, kind);
    line += ' ' + std::to_string(st.st_dev) + ' ' + std::to_string(st.st_ino) + ' ' + std::to_string(st.st_mode);
    // A directory's times change with everything made in it: only its identity matters.
    if (!S_ISDIR(st.st_mode))
        line += ' ' + std::to_string(st.st_size) + ' ' + std::to_string(ns_of(st.st_mtim)) + ' ' +
                std::to_string(ns_of(st.st_ctim));
    return line + ' ' + path + '\n';
}

void write_memo(const fs::path& file, const std::string& key, const std::vector<std::string>& inputs,
                const std::string& stats, const std::vector<std::string>& env) {
    try {
        make_dirs(file.parent_path(), 0700);
        nlohmann::json j{{"version", kMemoVersion}, {"key", key}, {"inputs", inputs}, {"stats", stats}, {"env", env}};
        TempFile tmp(file.parent_path(), ".memo.tmp", 0600);
        write_all(tmp.fd(), oci::to_message(j), tmp.path().string());
        tmp.replace(file);
    } catch (const std::exception&) {
        // a cache: the next run asks git again
    }
}

// The remembered identity, when the memo is for this key and its inputs' stat data stands.
std::optional<std::vector<std::string>> read_memo(const fs::path& file, const std::string& key) {
    auto text = read_file_if_exists(file, 1u << 20);
    if (!text) return std::nullopt;
    nlohmann::json j = oci::from_message(*text);
    try {
        // value() throws on a field of another type: inside the try, a miss like the rest.
        if (!j.is_object() || j.value("version", 0) != kMemoVersion || j.value("key", std::string()) != key)
            return std::nullopt;
        auto inputs = j.at("inputs").get<std::vector<std::string>>();
        if (stat_git_identity_inputs(inputs, std::numeric_limits<std::int64_t>::max()).text != j.at("stats").get<std::string>())
            return std::nullopt;
        return j.at("env").get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;  // a malformed memo is a miss
    }
}

}  // namespace

std::string GitConfigScope::get(std::string_view name) const {
    for (const auto& [n, v] : env)
        if (n == name) return v;
    return "";
}

std::vector<GitConfigEntry> parse_git_config_listing(std::string_view output) {
    std::vector<GitConfigEntry> entries;
    auto next = [&output]() -> std::optional<std::string_view> {
        if (output.empty()) return std::nullopt;
        auto end = output.find('\0');
        std::string_view item = output.substr(0, end);
        output = end == std::string_view::npos ? std::string_view() : output.substr(end + 1);
        return item;
    };
    while (auto origin = next()) {
        auto item = next();
        if (!item) break;  // cut short: the origin of nothing
        GitConfigEntry e;
        e.origin = std::string(*origin);
        auto nl = item->find('\n');
        e.key = std::string(item->substr(0, nl));
        if (nl != std::string_view::npos) {
            e.value = std::string(item->substr(nl + 1));
            e.has_value = true;
        }
        entries.push_back(std::move(e));
    }
    return entries;
}

std::vector<std::string> git_identity_env(const std::vector<GitConfigEntry>& entries) {
    std::optional<std::string> name, email;
    for (const auto& e : entries) {
        if (!e.has_value) continue;  // `[user] name` without a value
        if (e.key == "user.name") name = e.value;
        else if (e.key == "user.email") email = e.value;
    }
    std::vector<std::string> env;
    if (name && !name->empty()) env.insert(env.end(), {"GIT_AUTHOR_NAME=" + *name, "GIT_COMMITTER_NAME=" + *name});
    if (email && !email->empty()) env.insert(env.end(), {"GIT_AUTHOR_EMAIL=" + *email, "GIT_COMMITTER_EMAIL=" + *email});
    return env;
}

std::vector<std::string> git_identity_inputs(const GitConfigScope& scope, const std::vector<GitConfigEntry>& entries) {
    std::vector<std::string> inputs{"f:" + scope.git_binary.string()};
    auto file = [&inputs](const fs::path& p) { inputs.push_back("f:" + p.lexically_normal().string()); };
    // git(1) FILES: the system file, then $XDG_CONFIG_HOME/git/config and ~/.gitconfig (or
    // the files GIT_CONFIG_SYSTEM / GIT_CONFIG_GLOBAL name).
    std::string system = scope.get("GIT_CONFIG_SYSTEM");
    file(system.empty() ? fs::path("/etc/gitconfig") : fs::path(system));
    if (std::string global = scope.get("GIT_CONFIG_GLOBAL"); !global.empty()) {
        file(global);
    } else {
        std::string xdg = scope.get("XDG_CONFIG_HOME");
        file((xdg.empty() ? scope.home / ".config" : fs::path(xdg)) / "git" / "config");
        file(scope.home / ".gitconfig");
    }
    // Which repository git finds: a .git appearing in, or leaving, any directory up to /.
    for (fs::path dir = scope.cwd;; dir = dir.parent_path()) {
        inputs.push_back("g:" + (dir / ".git").string());
        if (dir == dir.root_path() || dir.parent_path() == dir) break;
    }
    // git reports origins relative to the work tree's top, where it runs from.
    const auto top = repository_top(scope.cwd);
    const fs::path base = top.value_or(scope.cwd);
    bool on_branch = false;
    for (const auto& e : entries) {
        if (!e.origin.starts_with("file:")) continue;
        fs::path origin(e.origin.substr(5));
        if (!origin.is_absolute()) origin = base / origin;
        file(origin);
        const bool include = e.key == "include.path" || (e.key.starts_with("includeif.") && e.key.ends_with(".path"));
        if (include && e.has_value) file(include_target(e.value, origin, scope.home));
        if (e.key.starts_with("includeif.onbranch:")) on_branch = true;
    }
    if (top) {
        // The repository's own config, even before it holds anything (a .git made empty, then
        // `git init`): origins list only files that had entries.
        const fs::path git_dir = git_dir_of(*top);
        file(git_dir / "config");
        file(git_dir / "config.worktree");
        if (on_branch) file(git_dir / "HEAD");
    }
    std::sort(inputs.begin() + 1, inputs.end());
    inputs.erase(std::unique(inputs.begin() + 1, inputs.end()), inputs.end());
    return inputs;
}

InputStats stat_git_identity_inputs(const std::vector<std::string>& inputs, std::int64_t settled_before_ns) {
    InputStats out;
    for (const auto& input : inputs) {
        if (input.size() < 3 || input[1] != ':') continue;
        const char kind = input[0];
        const std::string path = input.substr(2);
        struct stat st {};
        // Config files are read through symlinks (a dotfiles repo); a .git is looked at itself.
        int rc = kind == 'g' ? ::lstat(path.c_str(), &st) : ::stat(path.c_str(), &st);
        if (rc != 0) {
            out.text += std::string(1, kind) + " -" + std::to_string(errno) + ' ' + path + '\n';
            continue;
        }
        out.text += stat_line(kind, path, st);
        if (!S_ISDIR(st.st_mode) && ns_of(st.st_ctim) >= settled_before_ns) out.settled = false;
    }
    return out;
}

GitIdentity::GitIdentity(GitIdentity&& other) noexcept
    : answered_(other.answered_),
      env_(std::move(other.env_)),
      pid_(other.pid_),
      out_(std::move(other.out_)),
      scope_(std::move(other.scope_)),
      memo_file_(std::move(other.memo_file_)),
      memo_key_(std::move(other.memo_key_)),
      settled_before_ns_(other.settled_before_ns_) {
    other.pid_ = -1;
}

GitIdentity GitIdentity::start(const fs::path& memo_dir, std::chrono::nanoseconds settle) {
    GitIdentity g;
    fs::path git = runtime::find_in_path("git");
    if (git.empty()) {  // no git: no identity to pass
        g.answered_ = true;
        return g;
    }
    g.scope_ = current_scope(std::move(git));
    g.memo_key_ = memo_key(g.scope_);
    g.memo_file_ = memo_dir / (stable_hash_hex(g.memo_key_) + ".msgpack");
    if (auto remembered = read_memo(g.memo_file_, g.memo_key_)) {
        g.answered_ = true;
        g.env_ = std::move(*remembered);
        return g;
    }
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);
    g.settled_before_ns_ = ns_of(now) - static_cast<std::int64_t>(settle.count());

    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return g;
    UniqueFd read_end(fds[0]), write_end(fds[1]);
    posix_spawn_file_actions_t actions;
    if (::posix_spawn_file_actions_init(&actions) != 0) return g;
    ::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    ::posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
    ::posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    // The whole listing with origins (-z: values may hold newlines): the identity, and the
    // files it came from for the memo, in one run.
    const std::string binary = g.scope_.git_binary.string();
    const char* argv[] = {"git", "config", "-z", "--list", "--show-origin", nullptr};
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, binary.c_str(), &actions, nullptr, const_cast<char* const*>(argv), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return g;
    g.pid_ = pid;
    g.out_ = std::move(read_end);
    return g;
}

std::vector<std::string> GitIdentity::finish() {
    if (answered_) return env_;
    if (pid_ < 0) return {};
    std::string output;
    char buf[8192];
    bool complete = true;
    for (;;) {
        ssize_t n = ::read(out_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (output.size() > kMaxListing) {
            complete = false;
            break;
        }
        output.append(buf, static_cast<std::size_t>(n));
    }
    out_.reset();  // git gets EPIPE if it is still writing
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    pid_ = -1;
    // Anything but a clean exit with all of its output: nothing trusted from it.
    if (!complete || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return {};
    return remember(output);
}

std::vector<std::string> GitIdentity::remember(const std::string& output) {
    auto entries = parse_git_config_listing(output);
    auto env = git_identity_env(entries);
    auto inputs = git_identity_inputs(scope_, entries);
    auto stats = stat_git_identity_inputs(inputs, settled_before_ns_);
    if (stats.settled) write_memo(memo_file_, memo_key_, inputs, stats.text, env);
    return env;
}

GitIdentity::~GitIdentity() {
    if (pid_ < 0) return;
    out_.reset();
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
}

}  // namespace aishell::cli
