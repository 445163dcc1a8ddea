// The per-store memo of context file digests (ContextDigestMemo in composer/build_copy.hpp):
// the key it gives equals the key without it; unchanged files are not read again; any change
// of a file's stat identity (content, touch, replacement) makes it read again, so the key
// follows content; young files are not remembered; a broken memo file is an empty memo.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_copy.hpp"

namespace fs = std::filesystem;
using namespace aishell;
using namespace aishell::composer;
using std::chrono::seconds;

namespace {

struct Dirs {
    fs::path root, context, cache;
    UniqueFd fd;
    Dirs() {
        std::string tmpl = (fs::temp_directory_path() / "aishell-memo-test.XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        root = tmpl;
        context = root / "ctx";
        cache = root / "cache";
        fs::create_directories(context);
        fd = UniqueFd(::open(context.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    }
    ~Dirs() {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
    void write(const std::string& rel, const std::string& content) const {
        fs::create_directories((context / rel).parent_path());
        std::ofstream(context / rel, std::ios::trunc) << content;
    }
    // settle 0: every file counts as settled (the default, 2 s, would need waiting).
    ContextDigestMemo memo(seconds settle = seconds(0)) const { return ContextDigestMemo(cache, context.string(), settle); }
};

CopyRequest copy_of(std::vector<std::string> sources) {
    CopyRequest req;
    req.sources = std::move(sources);
    req.dest = "/dst/";
    return req;
}

}  // namespace

TEST_CASE("memo: the key is the same with and without the memo, hit or miss", "[build_copy][memo]") {
    Dirs d;
    d.write("src/a.txt", "a");
    d.write("src/sub/b.txt", "bb");
    d.write("top.txt", "t");
    const CopyRequest req = copy_of({"src", "top.txt"});
    const auto plain = source_digest(d.fd.get(), req, nullptr);
    auto first = d.memo();
    CHECK(source_digest(d.fd.get(), req, nullptr, &first) == plain);
    CHECK(first.hashed() == 3);
    first.save();
    auto second = d.memo();
    CHECK(source_digest(d.fd.get(), req, nullptr, &second) == plain);
    CHECK(second.hashed() == 0);
    CHECK(second.remembered() == 3);
}

TEST_CASE("memo: a changed file is read again, even with its size and mtime put back", "[build_copy][memo]") {
    Dirs d;
    d.write("src/a.txt", "one");
    d.write("src/b.txt", "bee");
    const CopyRequest req = copy_of({"src"});
    auto m1 = d.memo();
    const auto before = source_digest(d.fd.get(), req, nullptr, &m1);
    m1.save();
    struct stat st {};
    REQUIRE(::stat((d.context / "src/a.txt").c_str(), &st) == 0);
    d.write("src/a.txt", "two");  // same size
    const struct timespec times[2] = {st.st_atim, st.st_mtim};
    REQUIRE(::utimensat(AT_FDCWD, (d.context / "src/a.txt").c_str(), times, 0) == 0);  // mtime put back
    auto m2 = d.memo();
    const auto after = source_digest(d.fd.get(), req, nullptr, &m2);
    CHECK(after != before);
    CHECK(after == source_digest(d.fd.get(), req, nullptr));
    CHECK(m2.hashed() == 1);  // a.txt only: its ctime moved
    CHECK(m2.remembered() == 1);
    m2.save();
    // Replaced by another file (a new inode) with the first content: read, and the first key again.
    fs::remove(d.context / "src/a.txt");
    d.write("src/a.txt", "one");
    auto m3 = d.memo();
    CHECK(source_digest(d.fd.get(), req, nullptr, &m3) == before);
    CHECK(m3.hashed() == 1);
}

TEST_CASE("memo: files changed within the settle time are not remembered", "[build_copy][memo]") {
    Dirs d;
    d.write("young.txt", "y");
    const CopyRequest req = copy_of({"young.txt"});
    auto m1 = d.memo(seconds(3600));  // everything written in the last hour is young
    source_digest(d.fd.get(), req, nullptr, &m1);
    m1.save();
    auto m2 = d.memo(seconds(3600));
    source_digest(d.fd.get(), req, nullptr, &m2);
    CHECK(m2.hashed() == 1);
    CHECK(m2.remembered() == 0);
}

TEST_CASE("memo: entries are per context dir, and a broken memo file is an empty memo", "[build_copy][memo]") {
    Dirs d;
    d.write("f.txt", "f");
    const CopyRequest req = copy_of({"f.txt"});
    auto m1 = d.memo();
    const auto key = source_digest(d.fd.get(), req, nullptr, &m1);
    m1.save();
    // Another context dir with the same relative path: its own entry (read, not taken from ours).
    ContextDigestMemo other(d.cache, (d.root / "elsewhere").string(), seconds(0));
    CHECK(source_digest(d.fd.get(), req, nullptr, &other) == key);
    CHECK(other.hashed() == 1);
    // Garbage, then a cut-off file: read again, never an error.
    for (const std::string junk : {"not json", "{\"version\":1,\"entries\":{\"x\":[1,2"}) {
        write_file_atomic(d.cache / "context" / "digests.json", junk);
        auto m = d.memo();
        CHECK(source_digest(d.fd.get(), req, nullptr, &m) == key);
        CHECK(m.hashed() == 1);
    }
}

TEST_CASE("memo: nothing is written when nothing changed", "[build_copy][memo]") {
    Dirs d;
    d.write("f.txt", "f");
    const CopyRequest req = copy_of({"f.txt"});
    auto m1 = d.memo();
    source_digest(d.fd.get(), req, nullptr, &m1);
    m1.save();
    const fs::path file = d.cache / "context" / "digests.json";
    REQUIRE(fs::exists(file));
    struct stat before {};
    REQUIRE(::stat(file.c_str(), &before) == 0);
    auto m2 = d.memo();
    source_digest(d.fd.get(), req, nullptr, &m2);
    m2.save();
    struct stat after {};
    REQUIRE(::stat(file.c_str(), &after) == 0);
    CHECK(after.st_ino == before.st_ino);
    // A memo that saw no context file writes nothing at all.
    Dirs empty;
    empty.memo().save();
    CHECK_FALSE(fs::exists(empty.cache / "context"));
}
