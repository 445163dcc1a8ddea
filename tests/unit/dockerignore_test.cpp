// .dockerignore semantics (composer/dockerignore), checked against the behaviour documented by
// moby/patternmatcher's own test table (MatchesOrParentMatches: the pattern or a parent dir
// matches), ignorefile.ReadAll's reading rules, and a walk over a real directory.
#include <catch2/catch.hpp>

#include <fstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "composer/dockerignore.hpp"

using namespace aishell;
using namespace aishell::composer;

namespace {

bool excluded_by(const std::vector<std::string>& patterns, const std::string& path) {
    return IgnoreMatcher(patterns).excluded(path);
}

struct Case {
    const char* pattern;
    const char* path;
    bool excluded;
};

class TempDir {
public:
    TempDir() : path_(fs::temp_directory_path() / ("aishell-ignore-" + random_hex(8))) { fs::create_directories(path_); }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }
    void file(const std::string& rel) {
        fs::create_directories((path_ / rel).parent_path());
        std::ofstream(path_ / rel) << "x";
    }

private:
    fs::path path_;
};

}  // namespace

TEST_CASE("dockerignore: single patterns as patternmatcher matches them", "[dockerignore]") {
    // Expected values from moby/patternmatcher's TestMatches (exact or inexact = excluded).
    const Case cases[] = {
        {"**", "file", true},
        {"**", "dir/file", true},
        {"**/", "dir/file", true},
        {"**/**", "dir/file", true},
        {"dir/**", "dir/file", true},
        {"dir/**", "dir/dir2/file", true},
        {"**/dir", "dir", true},
        {"**/dir", "dir/file", true},
        {"**/dir2/*", "dir/dir2/file", true},
        {"**/dir2/**", "dir/dir2/dir3/file", true},
        {"**file", "file", true},
        {"**file", "dir/dir/file", true},
        {"**/file", "dir/dir/file", true},
        {"**/file*", "dir/dir/file.txt", true},
        {"**/file*.txt", "dir/dir/file.txt", true},
        {"**/**/*.txt", "dir/dir/file.txt", true},
        {"**/**/*.txt2", "dir/dir/file.txt", false},
        {"**/*.txt", "file.txt", true},
        {"a**/*.txt", "a/dir/dir/file.txt", true},
        {"a/*.txt", "a/dir/file.txt", false},
        {"a/*.txt", "a/file.txt", true},
        {"a/*.txt**", "a/file.txt", true},
        {"a[b-d]e", "ae", false},
        {"a[b-d]e", "ace", true},
        {"a[^b-d]e", "aze", true},
        {".*", ".foo", true},
        {".*", "foo", false},
        {"abc.def", "abcdef", false},
        {"abc.def", "abc.def", true},
        {"abc?def", "abcZdef", true},
        {"abc?def", "abcdef", false},
        {"**/foo/bar", "foo/bar", true},
        {"**/foo/bar", "dir/dir2/foo/bar", true},
        {"abc/**", "abc", false},
        {"abc/**", "abc/def/ghi", true},
        {"**/.foo", ".foo", true},
        {"**/.foo", "bar.foo", false},
        {"a(b)c/def", "a(b)c/def", true},
        {"a.|)$(}+{bc", "a.|)$(}+{bc", true},
        {"dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true},
        {"a\\*b", "a*b", true},
        {"a\\*b", "ab", false},
        {"a*", "ab/c", true},  // "a*" matches the parent dir "ab"
        {"a*/b", "a/c/b", false},
        {"a?b", "a\xE2\x98\xBA" "b", true},  // ? is one character, not one byte
        {"a???b", "a\xE2\x98\xBA" "b", false},
        {"a?b", "a/b", false},
        {"a*b", "a/b", false},
        {"[\\]a]", "]", true},
        {"[x\\-]", "-", true},
        {"[x\\-]", "z", false},
        {"docs", "docs/README.md", true},  // a directory excludes what is under it
        {"docs/", "docs/sub/x", true},
        {"./docs/../docs", "docs/x", true},
        {"*.md", "docs/README.md", false},  // * does not reach into directories
    };
    for (const auto& c : cases) {
        INFO("pattern " << c.pattern << " path " << c.path);
        CHECK(excluded_by({c.pattern}, c.path) == c.excluded);
    }
}

TEST_CASE("dockerignore: exceptions and the last matching pattern win", "[dockerignore]") {
    CHECK_FALSE(excluded_by({"*.go", "!fileutils.go"}, "fileutils.go"));
    CHECK(excluded_by({"!fileutils.go", "*.go"}, "fileutils.go"));
    CHECK_FALSE(excluded_by({"docs", "!docs/README.md"}, "docs/README.md"));
    CHECK(excluded_by({"docs", "!docs/README.md"}, "docs/other.md"));
    CHECK_FALSE(excluded_by({"docs/*", "!docs/README.md"}, "docs/README.md"));
    CHECK_FALSE(excluded_by({"**", "!util/docker/web"}, "util/docker/web/foo"));
    CHECK(excluded_by({"**", "!util/docker/web", "util/docker/web/foo"}, "util/docker/web/foo"));
    CHECK_FALSE(excluded_by({"**", "!dist/*.whl"}, "dist/a-1.0+x.whl"));
    // Issue 13's cases. An exception re-includes below an excluded directory; the directory
    // itself stays excluded (it is sent only as the parent of what is kept: walk_context).
    CHECK(excluded_by({"**", "!d/keep"}, "d"));
    CHECK_FALSE(excluded_by({"**", "!d/keep"}, "d/keep"));
    CHECK(excluded_by({"**", "!d/sub/keep"}, "d/drop"));
    CHECK(excluded_by({"**", "!d/sub/keep"}, "d/sub"));
    // A wildcard exception reaches into any excluded directory, as BuildKit's context walk
    // (fsutil filterFS: onlyPrefixExcludeExceptions off) applies it; Docker's classic builder
    // only walked into directories an exception starts with.
    CHECK(excluded_by({"d", "!**/keep"}, "d"));
    CHECK_FALSE(excluded_by({"d", "!**/keep"}, "d/keep"));
    CHECK_FALSE(excluded_by({"d", "!**/keep"}, "d/sub/keep"));
    CHECK(excluded_by({"d", "!**/keep"}, "d/drop"));
    CHECK_FALSE(excluded_by({"*"}, "."));  // the context itself is never excluded
    CHECK_FALSE(excluded_by({}, "any/path"));
}

TEST_CASE("dockerignore: malformed patterns are errors", "[dockerignore]") {
    CHECK_THROWS_WITH(IgnoreMatcher({"!"}), Catch::Contains("illegal exclusion pattern"));
    for (const char* bad : {"[", "a[", "[^", "[^bc", "\\", "[]a]", "[-]", "[x-]", "[-x]", "[a-b-c]"}) {
        INFO(bad);
        CHECK_THROWS_AS(IgnoreMatcher({bad}), Error);
    }
}

TEST_CASE("dockerignore: reading the file as ignorefile.ReadAll does", "[dockerignore]") {
    std::string text =
        "\xEF\xBB\xBF# a comment\n"
        "  node_modules  \n"
        "\n"
        "/build/\n"
        "! keep.txt\n"
        " # not a comment once indented\n"
        "a//b/./c\n"
        "*.log";  // no final newline
    auto patterns = read_dockerignore(text);
    CHECK(patterns == std::vector<std::string>{"node_modules", "build", "!keep.txt", "# not a comment once indented",
                                               "a/b/c", "*.log"});
    CHECK_THROWS_WITH(read_dockerignore("ok\nsrc/[abc\n", "ctx/.dockerignore"), Catch::StartsWith("ctx/.dockerignore:2: "));
    CHECK_THROWS_WITH(read_dockerignore("!\n"), Catch::StartsWith(".dockerignore:1: illegal exclusion"));
}

TEST_CASE("dockerignore: walking a context directory", "[dockerignore]") {
    TempDir ctx;
    for (const char* f : {"Dockerfile", "main.c", "debug.log", "docs/README.md", "docs/internal/notes.md",
                          "node_modules/pkg/index.js", "src/a.c", "src/deep/b.c", "src/deep/b.log"})
        ctx.file(f);
    fs::create_symlink("/etc", ctx.path() / "link");

    auto all = walk_context(ctx.path(), IgnoreMatcher({}));
    CHECK(all.size() == 16);  // 9 files, 6 dirs, 1 symlink (not followed)

    auto patterns = read_dockerignore("node_modules\n**/*.log\ndocs\n!docs/README.md\nlink\n");
    auto kept = walk_context(ctx.path(), IgnoreMatcher(patterns));
    CHECK(kept == std::vector<std::string>{"Dockerfile", "docs", "docs/README.md", "main.c", "src", "src/a.c",
                                           "src/deep", "src/deep/b.c"});
}

TEST_CASE("dockerignore: an excluded directory is sent only as the parent of a kept entry", "[dockerignore]") {
    TempDir ctx;
    for (const char* f : {"Dockerfile", "d/keep", "d/drop", "e/drop", "f/g/drop"}) ctx.file(f);
    CHECK(walk_context(ctx.path(), IgnoreMatcher({"**", "!d/keep", "!Dockerfile"})) ==
          std::vector<std::string>{"Dockerfile", "d", "d/keep"});
    CHECK(walk_context(ctx.path(), IgnoreMatcher({"**", "!d/sub/keep", "!f/g/keep"})).empty());
    CHECK(walk_context(ctx.path(), IgnoreMatcher({"d", "!**/keep"})) ==
          std::vector<std::string>{"Dockerfile", "d", "d/keep", "e", "e/drop", "f", "f/g", "f/g/drop"});
}

TEST_CASE("dockerignore: the Dockerfile's own ignore file wins over the context's", "[dockerignore]") {
    TempDir ctx;
    ctx.file(".dockerignore");
    CHECK(find_dockerignore(ctx.path(), ctx.path() / "Dockerfile") == ctx.path() / ".dockerignore");
    ctx.file("build/app.Dockerfile.dockerignore");
    CHECK(find_dockerignore(ctx.path(), ctx.path() / "build/app.Dockerfile") ==
          ctx.path() / "build/app.Dockerfile.dockerignore");
    fs::remove(ctx.path() / ".dockerignore");
    CHECK_FALSE(find_dockerignore(ctx.path(), ctx.path() / "Dockerfile"));
}

TEST_CASE("dockerignore: a backslash before a digit is an octal code or an error, as in Go's regexp", "[dockerignore]") {
    // Found by tests/fuzz (dockerignore target; corpus file crash-digit-escape): "\3333..." went
    // to std::regex as a backreference, whose number overflowed an int inside libstdc++.
    CHECK(excluded_by({"a\\101"}, "aA"));  // octal 101
    CHECK_FALSE(excluded_by({"a\\101"}, "a101"));
    CHECK(excluded_by({"do\\333" "333"}, "do\xC3\x9B" "333"));  // \333 is U+00DB, then literal digits
    CHECK(excluded_by({"x\\0"}, std::string("x\0", 2)));
    for (const char* bad : {"a\\1", "a\\9", "a\\8x", "do\\3"}) {
        INFO(bad);
        CHECK_THROWS_WITH(IgnoreMatcher({bad}), Catch::Contains("syntax error in pattern"));
    }
}

TEST_CASE("dockerignore: a pattern longer than PATH_MAX is refused, one up to it compiles and matches", "[dockerignore]") {
    using aishell::composer::IgnoreMatcher;
    // 600 KB of "?" overflowed the stack in std::regex's compiler (a crash, not an error).
    std::string huge(200000, '?');
    try {
        (void)aishell::composer::read_dockerignore(huge + "\n", "ctx/.dockerignore");
        FAIL("a 200000-byte pattern was accepted");
    } catch (const aishell::Error& e) {
        const std::string message = e.message();
        CHECK(message.find("ctx/.dockerignore:1:") == 0);
        CHECK(message.find("a pattern of 200000 bytes") != std::string::npos);
        CHECK(message.size() < 300);  // the pattern is shown by its start only
    }
    const std::string longest(4096, '?');
    IgnoreMatcher m({longest});
    CHECK(m.excluded(std::string(4096, 'a')));
    CHECK_FALSE(m.excluded(std::string(4095, 'a')));
    std::string classes;
    while (classes.size() + 3 <= 4096) classes += "[a]";
    IgnoreMatcher c({classes});
    CHECK(c.excluded(std::string(classes.size() / 3, 'a')));
}
