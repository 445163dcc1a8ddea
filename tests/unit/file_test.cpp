// Atomic file writes and TempFile (common/file.hpp): a reader sees the old or the new content,
// never a mix, and a writer that dies before commit leaves the old content and no litter.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/error.hpp"
#include "common/file.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using aishell::Error;
using aishell::TempFile;

namespace {

std::size_t count_entries(const fs::path& dir) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
    return n;
}

}  // namespace

TEST_CASE("file: write_file_atomic creates and replaces, with the mode asked", "[file]") {
    TempDir dir;
    fs::path p = dir.path / "index.json";
    aishell::write_file_atomic(p, "first", 0600);
    CHECK(aishell::read_file(p) == "first");
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    aishell::write_file_atomic(p, "second, longer");
    CHECK(aishell::read_file(p) == "second, longer");
    aishell::write_file_atomic(p, "");
    CHECK(aishell::read_file(p).empty());
    CHECK(count_entries(dir.path) == 1);  // no temp files left
}

TEST_CASE("file: a TempFile destroyed before commit leaves the old content", "[file]") {
    TempDir dir;
    fs::path p = dir.path / "state";
    aishell::write_file_atomic(p, "old content");
    fs::path temp_path;
    {
        TempFile tmp(dir.path, ".state.tmp");
        temp_path = tmp.path();
        aishell::write_all(tmp.fd(), "new content that never lands", "temp");
        CHECK(fs::exists(temp_path));
        CHECK(temp_path.parent_path() == dir.path);
    }  // the writer "dies" here
    CHECK_FALSE(fs::exists(temp_path));
    CHECK(aishell::read_file(p) == "old content");
    CHECK(count_entries(dir.path) == 1);
}

TEST_CASE("file: a writer process killed before commit leaves the old content", "[file]") {
    TempDir dir;
    fs::path p = dir.path / "state";
    aishell::write_file_atomic(p, "old content");
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        TempFile tmp(dir.path, ".state.tmp");
        aishell::write_all(tmp.fd(), "half of the new", "temp");
        ::_exit(0);  // no destructors, no commit: as if killed
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(aishell::read_file(p) == "old content");
    // The orphan temp file is a separate name; GC of tmp dirs sweeps such files.
    CHECK(count_entries(dir.path) == 2);
}

TEST_CASE("file: TempFile commit renames onto the target", "[file]") {
    TempDir dir;
    fs::path target = dir.path / "target";
    TempFile tmp(dir.path, "t");
    fs::path temp_path = tmp.path();
    aishell::write_all(tmp.fd(), "committed", "temp");
    tmp.commit(target);
    CHECK(aishell::read_file(target) == "committed");
    CHECK_FALSE(fs::exists(temp_path));
}

TEST_CASE("file: TempFile keep leaves the file for a later resume", "[file]") {
    TempDir dir;
    fs::path kept;
    {
        TempFile tmp(dir.path, "partial");
        kept = tmp.path();
        aishell::write_all(tmp.fd(), "resume me", "temp");
        tmp.keep();
    }
    CHECK(aishell::read_file(kept) == "resume me");
}

TEST_CASE("file: a moved TempFile is removed once, by its new owner", "[file]") {
    TempDir dir;
    fs::path p;
    {
        TempFile a(dir.path, "m");
        p = a.path();
        TempFile b(std::move(a));
        CHECK(b.path() == p);
        CHECK(fs::exists(p));
    }
    CHECK_FALSE(fs::exists(p));
    CHECK(count_entries(dir.path) == 0);
}

TEST_CASE("file: TempFile names are unique", "[file]") {
    TempDir dir;
    TempFile a(dir.path, "same"), b(dir.path, "same");
    CHECK(a.path() != b.path());
    CHECK(aishell::random_hex(16).size() == 16);
    CHECK(aishell::random_hex(5).find_first_not_of("0123456789abcdef") == std::string::npos);
}

TEST_CASE("file: read_file enforces its size cap and names the path", "[file]") {
    TempDir dir;
    fs::path p = dir.path / "big";
    aishell::write_file_atomic(p, std::string(100, 'x'));
    CHECK(aishell::read_file(p, 100).size() == 100);
    CHECK_THROWS_WITH(aishell::read_file(p, 99), Catch::Contains(p.string()));
    CHECK_FALSE(aishell::read_file_if_exists(dir.path / "absent").has_value());
    CHECK(aishell::read_file_if_exists(p) == std::string(100, 'x'));
    CHECK_THROWS_AS(aishell::read_file(dir.path / "absent"), Error);
}

TEST_CASE("file: make_dirs creates parents and refuses a file in the way", "[file]") {
    TempDir dir;
    aishell::make_dirs(dir.path / "a" / "b" / "c");
    CHECK(fs::is_directory(dir.path / "a" / "b" / "c"));
    aishell::make_dirs(dir.path / "a" / "b" / "c");  // again: fine
    aishell::write_file_atomic(dir.path / "f", "x");
    CHECK_THROWS_AS(aishell::make_dirs(dir.path / "f" / "sub"), Error);
}
