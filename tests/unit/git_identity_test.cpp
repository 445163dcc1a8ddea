// cli/git_identity.hpp: the git identity a run passes on, and the memo that spares a git run on
// every start while the files the answer came from stand.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>

#include "cli/git_identity.hpp"
#include "common/file.hpp"
#include "scoped_env.hpp"
#include "temp_dir.hpp"

using namespace aishell::cli;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

GitConfigEntry entry(std::string origin, std::string key, std::string value) {
    return GitConfigEntry{std::move(origin), std::move(key), std::move(value), true};
}

void write(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
}

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

}  // namespace

TEST_CASE("git config's listing with origins parses into entries, a cut-off origin is dropped", "[git_identity]") {
    auto entries = parse_git_config_listing("file:/etc/gitconfig\0user.name\nOld\0file:.git/config\0user.name\0command line:\0a.b\nx\ny\0file:x"s);
    REQUIRE(entries.size() == 3);
    CHECK(entries[0] == entry("file:/etc/gitconfig", "user.name", "Old"));
    CHECK(entries[1] == GitConfigEntry{"file:.git/config", "user.name", "", false});
    CHECK(entries[2] == entry("command line:", "a.b", "x\ny"));
    CHECK(parse_git_config_listing("").empty());
}

TEST_CASE("user.name and user.email become GIT_AUTHOR_* and GIT_COMMITTER_*, the last value winning", "[git_identity]") {
    std::vector<GitConfigEntry> entries{entry("file:/etc/gitconfig", "user.name", "Old Name"),
                                        entry("file:/h/.gitconfig", "user.email", "ada@example.org"),
                                        entry("file:.git/config", "user.name", "Ada Lovelace")};
    CHECK(git_identity_env(entries) == std::vector<std::string>{"GIT_AUTHOR_NAME=Ada Lovelace", "GIT_COMMITTER_NAME=Ada Lovelace",
                                                                "GIT_AUTHOR_EMAIL=ada@example.org", "GIT_COMMITTER_EMAIL=ada@example.org"});
    CHECK(git_identity_env({GitConfigEntry{"file:x", "user.name", "", false}}).empty());  // `[user] name`
    CHECK(git_identity_env({entry("file:x", "user.name", "")}).empty());
    CHECK(git_identity_env({}).empty());
}

TEST_CASE("the memo's inputs: git, the system and global files, every .git up to /, origins and includes", "[git_identity]") {
    TempDir t;
    const fs::path top = t.path / "repo", sub = top / "src" / "deep", home = t.path / "home";
    fs::create_directories(sub);
    fs::create_directories(top / ".git");
    GitConfigScope scope{sub, home, "/usr/bin/git", {}};
    std::vector<GitConfigEntry> entries{
        entry("file:" + (home / ".gitconfig").string(), "include.path", "extra.cfg"),
        entry("file:" + (home / "extra.cfg").string(), "include.path", "~/more.cfg"),
        entry("file:.git/config", "includeif.onbranch:main.path", "/etc/branchy.cfg"),
        entry("command line:", "user.name", "x"),
    };
    auto inputs = git_identity_inputs(scope, entries);
    CHECK(inputs.front() == "f:/usr/bin/git");
    for (const std::string& expected : std::vector<std::string>{"f:/etc/gitconfig"s, "f:" + (home / ".config/git/config").string(), "f:" + (home / ".gitconfig").string(),
                                 "f:" + (home / "extra.cfg").string(), "f:" + (home / "more.cfg").string(),
                                 "f:" + (top / ".git/config").string(), "f:/etc/branchy.cfg"s, "f:" + (top / ".git/HEAD").string(),
                                 "g:" + (sub / ".git").string(), "g:" + (top / ".git").string(), "g:" + (t.path / ".git").string(),
                                 "g:/.git"s})
        CHECK(has(inputs, expected));
    CHECK(std::is_sorted(inputs.begin() + 1, inputs.end()));

    // GIT_CONFIG_GLOBAL and GIT_CONFIG_SYSTEM name the files git reads instead.
    GitConfigScope named{sub, home, "/usr/bin/git", {{"GIT_CONFIG_GLOBAL", "/g.cfg"}, {"GIT_CONFIG_SYSTEM", "/s.cfg"}}};
    auto other = git_identity_inputs(named, {});
    CHECK(has(other, "f:/g.cfg"));
    CHECK(has(other, "f:/s.cfg"));
    CHECK_FALSE(has(other, "f:" + (home / ".gitconfig").string()));
    CHECK_FALSE(has(other, "f:/etc/gitconfig"));
    CHECK_FALSE(has(other, "f:" + (top / ".git/HEAD").string()));  // no includeIf onbranch
    CHECK(has(other, "f:" + (top / ".git/config").string()));      // before it has entries
}

TEST_CASE("the inputs' stat data changes with a file's content, its appearance, and a .git's kind", "[git_identity]") {
    TempDir t;
    const fs::path cfg = t.path / "cfg", dot_git = t.path / ".git";
    std::vector<std::string> inputs{"f:" + cfg.string(), "g:" + dot_git.string()};
    auto missing = stat_git_identity_inputs(inputs, INT64_MAX);
    write(cfg, "[user]\n\tname = A\n");
    auto present = stat_git_identity_inputs(inputs, INT64_MAX);
    CHECK(present.text != missing.text);
    CHECK(present.settled);
    CHECK_FALSE(stat_git_identity_inputs(inputs, 0).settled);  // changed after "0": too young to remember
    write(cfg, "[user]\n\tname = Bee\n");
    CHECK(stat_git_identity_inputs(inputs, INT64_MAX).text != present.text);
    auto before_repo = stat_git_identity_inputs(inputs, INT64_MAX);
    fs::create_directory(dot_git);
    auto with_repo = stat_git_identity_inputs(inputs, INT64_MAX);
    CHECK(with_repo.text != before_repo.text);
    write(dot_git / "index", "x");  // a directory's own times do not count
    CHECK(stat_git_identity_inputs(inputs, INT64_MAX).text == with_repo.text);
}

TEST_CASE("GitIdentity runs git once, then answers from the memo until a config file changes", "[git_identity]") {
    TempDir t;
    const fs::path bin = t.path / "bin", home = t.path / "home", work = t.path / "work", memo = t.path / "memo";
    fs::create_directories(work);
    // A git that counts its runs and lists ~/.gitconfig's name as `git config -z --list --show-origin` would.
    write(bin / "git",
          "#!/bin/sh\necho run >> \"$HOME/runs\"\n"
          "name=$(/bin/sed -n 's/^name=//p' \"$HOME/.gitconfig\")\n"
          "printf 'file:%s\\0user.name\\n%s\\0' \"$HOME/.gitconfig\" \"$name\"\n");
    ::chmod((bin / "git").c_str(), 0755);
    write(home / ".gitconfig", "name=Ada\n");
    ScopedEnv path("PATH", bin.string()), h("HOME", home.string()), xdg("XDG_CONFIG_HOME", std::nullopt);
    ScopedCwd cwd(work);
    auto runs = [&] {
        std::string log = aishell::read_file(home / "runs");
        return std::count(log.begin(), log.end(), '\n');
    };
    const std::vector<std::string> ada{"GIT_AUTHOR_NAME=Ada", "GIT_COMMITTER_NAME=Ada"};

    auto first = GitIdentity::start(memo, std::chrono::nanoseconds(0));
    CHECK(first.ran_git());
    CHECK(first.finish() == ada);
    auto second = GitIdentity::start(memo, std::chrono::nanoseconds(0));
    CHECK_FALSE(second.ran_git());
    CHECK(second.finish() == ada);
    CHECK(runs() == 1);

    write(home / ".gitconfig", "name=Grace\n");
    auto third = GitIdentity::start(memo, std::chrono::nanoseconds(0));
    CHECK(third.ran_git());
    CHECK(third.finish() == std::vector<std::string>{"GIT_AUTHOR_NAME=Grace", "GIT_COMMITTER_NAME=Grace"});

    // A repository appearing above the working dir: git may find other config there.
    fs::create_directory(t.path / ".git");
    auto fourth = GitIdentity::start(memo, std::chrono::nanoseconds(0));
    CHECK(fourth.ran_git());
    fourth.finish();
    CHECK(runs() == 3);

    // An answer read from a file changed within the settle time is not remembered.
    write(home / ".gitconfig", "name=Hopper\n");
    GitIdentity::start(memo, std::chrono::hours(1)).finish();
    auto sixth = GitIdentity::start(memo, std::chrono::hours(1));
    CHECK(sixth.ran_git());
    CHECK(sixth.finish() == std::vector<std::string>{"GIT_AUTHOR_NAME=Hopper", "GIT_COMMITTER_NAME=Hopper"});
}

TEST_CASE("a memo that is not one (bad JSON, fields of another type) is a miss: git runs", "[git_identity]") {
    TempDir t;
    const fs::path bin = t.path / "bin", home = t.path / "home", memo = t.path / "memo";
    write(bin / "git", "#!/bin/sh\nprintf 'file:/x\\0user.name\\nAda\\0'\n");
    ::chmod((bin / "git").c_str(), 0755);
    fs::create_directories(home);
    ScopedEnv path("PATH", bin.string()), h("HOME", home.string());
    ScopedCwd cwd(t.path);
    GitIdentity::start(memo, std::chrono::nanoseconds(0)).finish();  // writes the memo
    std::vector<fs::path> memos(fs::directory_iterator(memo), fs::directory_iterator{});
    REQUIRE(memos.size() == 1);
    for (const std::string& bad : {"not json"s, R"({"version":"1"})"s, R"({"version":1,"key":7})"s, "[]"s}) {
        write(memos[0], bad);
        auto g = GitIdentity::start(memo, std::chrono::nanoseconds(0));
        CHECK(g.ran_git());
        CHECK(g.finish() == std::vector<std::string>{"GIT_AUTHOR_NAME=Ada", "GIT_COMMITTER_NAME=Ada"});
    }
}

TEST_CASE("a directory and a name that are not UTF-8 are remembered byte for byte", "[git_identity]") {
    TempDir t;
    const fs::path bin = t.path / "bin", home = t.path / "home", work = t.path / "caf\xe9", memo = t.path / "memo";
    write(bin / "git", "#!/bin/sh\necho run >> \"$HOME/runs\"\nprintf 'file:/x\\0user.name\\nJos\\351\\0'\n");
    ::chmod((bin / "git").c_str(), 0755);
    fs::create_directories(home);
    fs::create_directories(work);
    ScopedEnv path("PATH", bin.string()), h("HOME", home.string());
    ScopedCwd cwd(work);
    const std::vector<std::string> jose{"GIT_AUTHOR_NAME=Jos\xe9", "GIT_COMMITTER_NAME=Jos\xe9"};
    CHECK(GitIdentity::start(memo, std::chrono::nanoseconds(0)).finish() == jose);
    auto second = GitIdentity::start(memo, std::chrono::nanoseconds(0));
    CHECK_FALSE(second.ran_git());
    CHECK(second.finish() == jose);
}

TEST_CASE("without git on PATH there is no identity and nothing runs", "[git_identity]") {
    TempDir t;
    ScopedEnv path("PATH", (t.path / "nothing").string());
    auto g = GitIdentity::start(t.path / "memo");
    CHECK_FALSE(g.ran_git());
    CHECK(g.finish().empty());
}
