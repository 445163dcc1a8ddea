// COPY/ADD source handling: path cleaning, wildcard expansion with .dockerignore, the missing
// source error, --chmod parsing, and the source digest that keys the step cache.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_copy.hpp"

namespace fs = std::filesystem;
using namespace aishell;
using namespace aishell::composer;

namespace {

struct Context {
    fs::path path;
    UniqueFd fd;
    Context() {
        std::string tmpl = (fs::temp_directory_path() / "aishell-copy-test.XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
        fd = UniqueFd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    }
    ~Context() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    void write(const std::string& rel, const std::string& content) {
        fs::create_directories((path / rel).parent_path());
        std::ofstream(path / rel) << content;
    }
};

}  // namespace

TEST_CASE("source paths are cleaned relative to the context root", "[build_copy]") {
    CHECK(clean_source_path(".") == ".");
    CHECK(clean_source_path("/") == ".");
    CHECK(clean_source_path("./a/b/") == "a/b");
    CHECK(clean_source_path("../../etc/passwd") == "etc/passwd");
    CHECK(clean_source_path("a/../b") == "b");
}

TEST_CASE("wildcards match per path component and skip ignored files", "[build_copy]") {
    Context ctx;
    ctx.write("src/a.txt", "a");
    ctx.write("src/b.txt", "b");
    ctx.write("src/c.log", "c");
    ctx.write("src/sub/d.txt", "d");
    ctx.write(".hidden.txt", "h");
    CHECK(expand_source(ctx.fd.get(), "src/*.txt", nullptr, "COPY") == std::vector<std::string>{"src/a.txt", "src/b.txt"});
    CHECK(expand_source(ctx.fd.get(), "src/?.log", nullptr, "COPY") == std::vector<std::string>{"src/c.log"});
    CHECK(expand_source(ctx.fd.get(), "*/sub", nullptr, "COPY") == std::vector<std::string>{"src/sub"});
    // Go's filepath.Match lets * match a leading dot.
    CHECK(expand_source(ctx.fd.get(), "*.txt", nullptr, "COPY") == std::vector<std::string>{".hidden.txt"});
    IgnoreMatcher ignore({"src/b.txt"});
    CHECK(expand_source(ctx.fd.get(), "src/*.txt", &ignore, "COPY") == std::vector<std::string>{"src/a.txt"});
}

TEST_CASE("a missing or ignored source names the path", "[build_copy]") {
    Context ctx;
    ctx.write("kept.txt", "k");
    ctx.write("secret.env", "s");
    IgnoreMatcher ignore({"*.env"});
    CHECK_THROWS_WITH(expand_source(ctx.fd.get(), "nope.txt", nullptr, "COPY"),
                      Catch::Contains("COPY failed: file not found in build context or excluded by .dockerignore: nope.txt"));
    CHECK_THROWS_WITH(expand_source(ctx.fd.get(), "secret.env", &ignore, "ADD"), Catch::Contains("ADD failed") &&
                                                                                     Catch::Contains("secret.env"));
    CHECK_THROWS_AS(expand_source(ctx.fd.get(), "*.md", nullptr, "COPY"), Error);
}

TEST_CASE("a symlink source cannot leave the context", "[build_copy]") {
    Context ctx;
    fs::create_symlink("/etc/hostname", ctx.path / "abs");
    fs::create_symlink("../../../../etc", ctx.path / "up");
    // Resolved beneath the root: /etc/hostname inside the context does not exist.
    CHECK_THROWS_AS(expand_source(ctx.fd.get(), "abs", nullptr, "COPY"), Error);
    CHECK_THROWS_AS(expand_source(ctx.fd.get(), "up/hostname", nullptr, "COPY"), Error);
}

TEST_CASE("--chmod takes octal modes only", "[build_copy]") {
    CHECK(parse_chmod("755", "COPY") == 0755);
    CHECK(parse_chmod("4755", "COPY") == 04755);
    CHECK_THROWS_WITH(parse_chmod("u+x", "COPY"), Catch::Contains("COPY --chmod=u+x: not an octal mode"));
    CHECK_THROWS_AS(parse_chmod("", "COPY"), Error);
    CHECK_THROWS_AS(parse_chmod("99", "COPY"), Error);
}

TEST_CASE("the source digest changes with content, mode and names, not with ignored files", "[build_copy]") {
    Context ctx;
    ctx.write("dir/a.txt", "a");
    ctx.write("dir/b.log", "b");
    ctx.write("other.txt", "o");
    IgnoreMatcher ignore({"**/*.log"});
    CopyRequest req;
    req.sources = {"dir"};
    req.dest = "/dst/";
    auto d1 = source_digest(ctx.fd.get(), req, &ignore);
    CHECK(d1 == source_digest(ctx.fd.get(), req, &ignore));
    ctx.write("other.txt", "changed");  // not a source
    CHECK(d1 == source_digest(ctx.fd.get(), req, &ignore));
    ctx.write("dir/b.log", "changed but ignored");
    CHECK(d1 == source_digest(ctx.fd.get(), req, &ignore));
    ctx.write("dir/a.txt", "A");
    auto d2 = source_digest(ctx.fd.get(), req, &ignore);
    CHECK(d2 != d1);
    fs::permissions(ctx.path / "dir/a.txt", fs::perms::owner_exec, fs::perm_options::add);
    CHECK(source_digest(ctx.fd.get(), req, &ignore) != d2);
    ctx.write("dir/new.txt", "n");
    CHECK(source_digest(ctx.fd.get(), req, &ignore) != d2);
}
