// COPY/ADD source handling: path cleaning, wildcard expansion with .dockerignore, the missing
// source error, --chmod parsing, and the source digest that keys the step cache; owners the
// copy cannot set (single userns mode) recorded for the layer writer.
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "child_process.hpp"
#include "composer/build_copy.hpp"
#include "oci/layer_write.hpp"
#include "oci/store.hpp"
#include "skip.hpp"

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
    CHECK_THROWS_AS(expand_source(ctx.fd.get(), "nodir/*.md", nullptr, "COPY"), Error);
}

TEST_CASE("a wildcard that matches nothing is no source, as in BuildKit", "[build_copy]") {
    Context ctx;
    ctx.write("f", "f");
    ctx.write("secret.env", "s");
    ctx.write("sub/g", "g");
    IgnoreMatcher ignore({"*.env"});
    CHECK(expand_source(ctx.fd.get(), "missing*", nullptr, "COPY").empty());
    CHECK(expand_source(ctx.fd.get(), "sub/*.txt", nullptr, "COPY").empty());
    CHECK(expand_source(ctx.fd.get(), "*/nothing", nullptr, "COPY").empty());
    CHECK(expand_source(ctx.fd.get(), "*.env", &ignore, "COPY").empty());
    // The directory a wildcard searches must exist (fsutil walks it), and a plain name must match.
    CHECK_THROWS_WITH(expand_source(ctx.fd.get(), "nodir/*", nullptr, "COPY"), Catch::Contains("nodir/*"));
    CHECK_THROWS_AS(expand_source(ctx.fd.get(), "f/*", nullptr, "COPY"), Error);
    CHECK_THROWS_AS(expand_source(ctx.fd.get(), "missing", nullptr, "COPY"), Error);
}

TEST_CASE("a symlink source cannot leave the context", "[build_copy]") {
    Context ctx;
    fs::create_symlink("/etc/hostname", ctx.path / "abs");
    fs::create_symlink("../../../../etc", ctx.path / "up");
    // Resolved beneath the root: /etc/hostname inside the context does not exist.
    CHECK_THROWS_AS(expand_source(ctx.fd.get(), "abs", nullptr, "COPY"), Error);
    CHECK_THROWS_AS(expand_source(ctx.fd.get(), "up/hostname", nullptr, "COPY"), Error);
}

TEST_CASE("a destination resolves its symlinks as if the target root were /", "[build_copy]") {
    Context root;
    const std::string r = root.path.string();
    fs::create_directories(root.path / "etc");
    fs::create_directories(root.path / "real");
    fs::create_symlink("target", root.path / "link");  // dangling
    fs::create_symlink("/etc", root.path / "e");
    fs::create_symlink("../../..", root.path / "up");
    fs::create_symlink("/real/../nowhere", root.path / "rel");
    fs::create_symlink("link", root.path / "chain");
    fs::create_symlink("loop2", root.path / "loop1");
    fs::create_symlink("loop1", root.path / "loop2");
    CHECK(resolve_in_root(r, "/link/sub/") == r + "/target/sub");
    CHECK(resolve_in_root(r, "/link") == r + "/target");  // the last component too
    CHECK(resolve_in_root(r, "/e/passwd") == r + "/etc/passwd");
    CHECK(resolve_in_root(r, "/up") == r);
    CHECK(resolve_in_root(r, "/up/etc/x") == r + "/etc/x");
    CHECK(resolve_in_root(r, "/rel/f") == r + "/nowhere/f");
    CHECK(resolve_in_root(r, "/chain/../y") == r + "/y");  // ".." after a link: from where it led
    CHECK(resolve_in_root(r, "/real/./new/deeper") == r + "/real/new/deeper");
    CHECK(resolve_in_root(r, "/") == r);
    CHECK(resolve_in_root("/", "/") == "/");
    CHECK_THROWS_WITH(resolve_in_root(r, "/loop1/x"), Catch::Contains("too many levels of symbolic links"));
}

// COPY through symlinks in the destination root: "" when every file lands where Docker 20.10
// and BuildKit put it, else what went wrong.
std::string copy_through_symlinks() {
    Context ctx;
    ctx.write("f", "hi\n");
    ctx.write("d/g", "g\n");
    Context root;
    fs::create_directories(root.path / "etc");
    fs::create_symlink("target", root.path / "link");
    fs::create_symlink("../../..", root.path / "up");
    fs::create_symlink("/etc", root.path / "e");
    fs::create_symlink("new", root.path / "dang");
    fs::create_symlink("newdir", root.path / "dangd");
    auto copy = [&](std::vector<std::string> sources, std::string dest) {
        CopyRequest req;
        req.sources = std::move(sources);
        req.dest = std::move(dest);
        copy_files(ctx.fd.get(), root.path.string(), req, nullptr);
    };
    std::string wrong;
    auto expect = [&](bool ok, const char* what) { if (!ok) wrong += std::string(what) + "\n"; };
    copy({"f"}, "/link/sub/");
    expect(fs::is_regular_file(root.path / "target/sub/f"), "/link/sub/ -> target/sub/f");
    expect(fs::is_symlink(root.path / "link"), "link kept");
    copy({"f"}, "/up/x/");
    expect(fs::is_regular_file(root.path / "x/f"), "/up/x/ -> x/f");
    copy({"f"}, "/e/");
    expect(fs::is_regular_file(root.path / "etc/f"), "/e/ -> etc/f");
    copy({"f"}, "/dang");
    expect(fs::is_regular_file(root.path / "new"), "/dang -> new");
    expect(fs::is_symlink(root.path / "dang"), "dang kept");
    copy({"d"}, "/dangd");
    expect(fs::is_regular_file(root.path / "newdir/g"), "/dangd -> newdir/g");
    return wrong;
}

TEST_CASE("COPY through a dangling or escaping symlink writes inside the target root", "[build_copy][root]") {
    aishell::test::require_root();  // the copy sets owner 0:0
    CHECK(copy_through_symlinks() == "");
}

TEST_CASE("COPY through symlinks without openat2 (ENOSYS from seccomp): the resolver's walk", "[build_copy][root]") {
    aishell::test::require_root();
    CHECK(aishell::test::output_without_openat2(copy_through_symlinks) == "");
}

TEST_CASE("a symlink source does not reach what .dockerignore leaves out", "[build_copy]") {
    Context ctx;
    ctx.write("secret.txt", "s");
    ctx.write("ok.txt", "o");
    ctx.write("dir/s1.txt", "1");
    ctx.write("dir/s2.txt", "2");
    fs::create_symlink("secret.txt", ctx.path / "link_to_secret");
    fs::create_symlink("/secret.txt", ctx.path / "abslink");
    fs::create_symlink("link_to_secret", ctx.path / "chain");
    fs::create_symlink("dir", ctx.path / "dirlink");
    fs::create_symlink("ok.txt", ctx.path / "link_to_ok");
    fs::create_symlink("ok.txt", ctx.path / "ignored_link");
    fs::create_symlink("ignored_link", ctx.path / "via_ignored");
    IgnoreMatcher ignore({"secret.txt", "dir/s2.txt", "ignored_link"});
    for (const char* source : {"link_to_secret", "abslink", "chain", "dirlink/s2.txt", "via_ignored", "dirlink/../secret.txt"}) {
        CAPTURE(source);
        CHECK(resolve_source(ctx.fd.get(), source, &ignore) == std::nullopt);
        CHECK_THROWS_WITH(expand_source(ctx.fd.get(), source, &ignore, "COPY"),
                          Catch::Contains("not found in build context or excluded by .dockerignore"));
        CHECK(resolve_source(ctx.fd.get(), source, nullptr).has_value());  // only the ignore rules refuse
    }
    CHECK(resolve_source(ctx.fd.get(), "dirlink/s1.txt", &ignore) == "dir/s1.txt");
    CHECK(resolve_source(ctx.fd.get(), "dirlink", &ignore) == "dir");
    CHECK(resolve_source(ctx.fd.get(), "/link_to_ok", &ignore) == "ok.txt");
    CHECK(resolve_source(ctx.fd.get(), "abslink", nullptr) == "secret.txt");
    CHECK(resolve_source(ctx.fd.get(), ".", &ignore) == ".");
    CHECK(expand_source(ctx.fd.get(), "link_*", &ignore, "COPY") == std::vector<std::string>{"link_to_ok"});
    fs::create_symlink("loop", ctx.path / "loop");
    CHECK(resolve_source(ctx.fd.get(), "loop", nullptr) == std::nullopt);
}

TEST_CASE("a symlinked directory source copies and hashes only what is not ignored", "[build_copy]") {
    Context ctx;
    ctx.write("dir/s1.txt", "1");
    ctx.write("dir/s2.txt", "2");
    fs::create_symlink("dir", ctx.path / "dirlink");
    IgnoreMatcher ignore({"dir/s2.txt"});
    CopyRequest req;
    req.sources = {"dirlink"};
    req.dest = "/o/";
    req.instruction = "COPY";
    req.chown = CopyOwner{::getuid(), ::getgid()};
    oci::Digest before = source_digest(ctx.fd.get(), req, &ignore, nullptr);
    ctx.write("dir/s2.txt", "changed");
    CHECK(source_digest(ctx.fd.get(), req, &ignore, nullptr) == before);
    Context out;
    copy_files(ctx.fd.get(), out.path.string(), req, &ignore);
    CHECK(fs::exists(out.path / "o" / "s1.txt"));
    CHECK(!fs::exists(out.path / "o" / "s2.txt"));
}

TEST_CASE("flag --chmod takes octal modes only", "[build_copy]") {
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

// ---- owners that cannot be set ------------------------------------------------------------------
namespace {

struct Stat {
    struct stat st {};
    explicit Stat(const fs::path& p) { REQUIRE(::lstat(p.c_str(), &st) == 0); }
};

// Runs fn in a forked child whose user namespace maps only host root to 0, as single mode maps
// only the caller: lchown to any other id fails with EINVAL there. Returns what fn returned,
// or "error: ..." when it threw.
template <typename Fn>
std::string in_single_userns(Fn fn) {
    aishell::test::require_root();
    int status = 0;
    std::string out = test::output_of_child(
        [&]() -> std::string { return test::enter_single_id_userns() ? fn() : "error: cannot make the user namespace"; },
        status);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    return out;
}

// The table a copy (in the single-mapping namespace) recorded, as its file text.
std::string copy_recording(const Context& ctx, const fs::path& root, const std::vector<CopyRequest>& requests) {
    return in_single_userns([&] {
        UniqueFd tree(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        OwnerRecorder owners(root.string(), tree.get());
        for (const auto& r : requests) copy_files(ctx.fd.get(), root.string(), r, nullptr, &owners);
        return owners.finish().serialize();
    });
}

CopyRequest copy_req(std::vector<std::string> sources, std::string dest, std::optional<CopyOwner> chown = {}) {
    CopyRequest r;
    r.sources = std::move(sources);
    r.dest = std::move(dest);
    r.chown = chown;
    return r;
}

std::map<std::string, std::pair<std::uint32_t, std::uint32_t>> owners_in(const oci::OwnerTable& t) {
    std::map<std::string, std::pair<std::uint32_t, std::uint32_t>> out;
    for (const auto& [p, r] : t.records()) out[p] = {r.owner.uid, r.owner.gid};
    return out;
}

}  // namespace

TEST_CASE("COPY --chown to ids the namespace does not map records them for the layer", "[build_copy][root]") {
    Context ctx;
    ctx.write("src/f.txt", "f");
    ctx.write("src/sub/g", "g");
    ctx.write("src/run.sh", "#!/bin/sh\n");
    REQUIRE(::chmod((ctx.path / "src/run.sh").c_str(), 04755) == 0);
    fs::create_symlink("f.txt", ctx.path / "src/link");
    ctx.write("src/h1", "h");
    REQUIRE(::link((ctx.path / "src/h1").c_str(), (ctx.path / "src/h2").c_str()) == 0);
    Context root;

    std::string text = copy_recording(ctx, root.path, {copy_req({"src"}, "/opt/app/", CopyOwner{1000, 1001})});
    auto table = oci::OwnerTable::parse(text, "owners");
    using Owners = std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>;
    const std::pair<std::uint32_t, std::uint32_t> o{1000, 1001};
    // Every copied entry and the parents the copy made; paths relative to the layer root.
    CHECK(owners_in(table) == Owners{{"opt", o}, {"opt/app", o}, {"opt/app/f.txt", o}, {"opt/app/h1", o},
                                     {"opt/app/h2", o}, {"opt/app/link", o}, {"opt/app/run.sh", o},
                                     {"opt/app/sub", o}, {"opt/app/sub/g", o}});
    // On disk they stay root's (the only mapped id); modes are as asked, set-id bits too.
    for (const auto& [p, r] : table.records()) {
        Stat st(root.path / p);
        CHECK((st.st.st_uid == 0 && st.st.st_gid == 0));
        // Each record names the entry as it is now.
        UniqueFd fd(::open(root.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        auto id = oci::entry_identity_at(fd.get(), p);
        REQUIRE(id);
        CHECK(r.matches(*id));
    }
    CHECK((Stat(root.path / "opt/app/run.sh").st.st_mode & 07777) == 04755);
    CHECK(table.find("opt/app/link")->type == S_IFLNK);
    CHECK(Stat(root.path / "opt/app/h1").st.st_ino == Stat(root.path / "opt/app/h2").st.st_ino);

    // The layer written from that tree carries the intended owners.
    Context store_dir;
    auto store = oci::Store::open(store_dir.path / "store");
    oci::LayerWriteOptions options;
    options.owners = &table;
    auto layer = oci::write_layer(store, UniqueFd(::open(root.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)).get(),
                                  options);
    REQUIRE(layer);
    CHECK(layer->owners_from_table == 9);
}

TEST_CASE("an owner is recorded under the real path when the destination goes through a symlink",
          "[build_copy][root]") {
    Context ctx;
    ctx.write("f.txt", "f");
    Context root;
    fs::create_directories(root.path / "real");
    fs::create_symlink("real", root.path / "link");
    auto table = oci::OwnerTable::parse(
        copy_recording(ctx, root.path, {copy_req({"f.txt"}, "/link/f.txt", CopyOwner{1000, 1000})}), "owners");
    CHECK(owners_in(table) == std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{{"real/f.txt", {1000, 1000}}});
}

TEST_CASE("what a later copy replaces or removes loses its recorded owner", "[build_copy][root]") {
    Context ctx;
    ctx.write("f.txt", "f");
    ctx.write("dir/a", "a");
    ctx.write("dir/b/c", "c");
    ctx.write("dir2/b", "now a file");
    Context root;
    // /x: recorded for 1000, then replaced by a copy without --chown (root's, which the disk has).
    // /d/b: a tree recorded for 1000, then replaced by a file of a copy without --chown.
    // /keep: recorded, then written again with another unmapped owner: the last one counts.
    auto table = oci::OwnerTable::parse(
        copy_recording(ctx, root.path,
                       {copy_req({"f.txt"}, "/x", CopyOwner{1000, 1000}), copy_req({"f.txt"}, "/x"),
                        copy_req({"dir"}, "/d", CopyOwner{1000, 1000}), copy_req({"dir2"}, "/d"),
                        copy_req({"f.txt"}, "/keep", CopyOwner{1000, 1000}),
                        copy_req({"f.txt"}, "/keep", CopyOwner{2000, 2000})}),
        "owners");
    CHECK(owners_in(table) == std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{
                                  {"d", {1000, 1000}}, {"d/a", {1000, 1000}}, {"keep", {2000, 2000}}});
    CHECK(fs::is_regular_file(root.path / "d/b"));
}

TEST_CASE("ADD of a tar records the archive's unmapped owners and keeps its set-id bits", "[build_copy][root]") {
    // The tar, written by the layer writer with owners from a table.
    Context tree, store_dir;
    tree.write("bin/suid", "#!/bin/sh\n");
    REQUIRE(::chmod((tree.path / "bin/suid").c_str(), 04755) == 0);
    tree.write("dir/file", "f");
    fs::create_symlink("dir/file", tree.path / "l");
    oci::OwnerTable tar_owners;
    for (const char* p : {"bin/suid", "dir", "l"}) {
        auto id = oci::entry_identity_at(tree.fd.get(), p);
        REQUIRE(id);
        tar_owners.set(p, oci::OwnerRecord::for_entry({1000, 1001}, *id));
    }
    auto store = oci::Store::open(store_dir.path / "store");
    oci::LayerWriteOptions options;
    options.compression = oci::media_type::Compression::None;
    options.owners = &tar_owners;
    auto layer = oci::write_layer(store, UniqueFd(::open(tree.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)).get(),
                                  options);
    REQUIRE(layer);
    Context ctx;
    fs::copy_file(store.blob_path(layer->descriptor.digest), ctx.path / "a.tar");

    Context root;
    CopyRequest add = copy_req({"a.tar"}, "/x/");
    add.extract_archives = true;
    add.instruction = "ADD";
    auto table = oci::OwnerTable::parse(copy_recording(ctx, root.path, {add}), "owners");
    const std::pair<std::uint32_t, std::uint32_t> o{1000, 1001};
    // Directories the disk has right are recorded too (they might be merged with a lower one).
    CHECK(owners_in(table) == std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{
                                  {"x", {0, 0}}, {"x/bin", {0, 0}}, {"x/bin/suid", o}, {"x/dir", o}, {"x/l", o}});
    CHECK((Stat(root.path / "x/bin/suid").st.st_mode & 07777) == 04755);
    CHECK(Stat(root.path / "x/bin/suid").st.st_uid == 0);
    CHECK(fs::is_symlink(root.path / "x/l"));
}

TEST_CASE("ADD of a tar with device nodes skips them, as an unpack in a user namespace must", "[build_copy][root]") {
    aishell::test::require_root();  // to make the nodes the tar is made from
    Context tree, ctx;
    tree.write("etc/hostname", "h\n");
    fs::create_directories(tree.path / "dev");
    REQUIRE(::mknod((tree.path / "dev/console").c_str(), S_IFCHR | 0600, makedev(5, 1)) == 0);
    REQUIRE(::mknod((tree.path / "dev/loop0").c_str(), S_IFBLK | 0660, makedev(7, 0)) == 0);
    REQUIRE(::mkfifo((tree.path / "dev/fifo").c_str(), 0644) == 0);
    const std::string cmd = "tar -C '" + tree.path.string() + "' -cf '" + (ctx.path / "rootfs.tar").string() + "' .";
    REQUIRE(std::system(cmd.c_str()) == 0);

    Context root;
    CopyRequest add = copy_req({"rootfs.tar"}, "/");
    add.extract_archives = true;
    add.instruction = "ADD";
    copy_recording(ctx, root.path, {add});
    CHECK(fs::is_regular_file(root.path / "etc/hostname"));
    CHECK(fs::is_directory(root.path / "dev"));
    CHECK(fs::is_fifo(root.path / "dev/fifo"));
    CHECK_FALSE(fs::exists(fs::symlink_status(root.path / "dev/console")));
    CHECK_FALSE(fs::exists(fs::symlink_status(root.path / "dev/loop0")));
}

TEST_CASE("owners the namespace maps are set on disk, only directories keep a record", "[build_copy][root]") {
    aishell::test::require_root();
    Context ctx;
    ctx.write("dir/f", "f");
    fs::create_symlink("f", ctx.path / "dir/l");
    Context root;
    UniqueFd tree(::open(root.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    OwnerRecorder owners(root.path.string(), tree.get());
    copy_files(ctx.fd.get(), root.path.string(), copy_req({"dir"}, "/app", CopyOwner{1000, 1001}), nullptr, &owners);
    // A directory that is not opaque may be merged with a lower layer's, whose recorded owner
    // must not win over the one set here; files overlayfs did not copy up need nothing.
    CHECK(owners_in(owners.finish()) ==
          std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{{"app", {1000, 1001}}});
    for (const char* p : {"app", "app/f", "app/l"}) {
        Stat st(root.path / p);
        CHECK((st.st.st_uid == 1000 && st.st.st_gid == 1001));
    }
}

TEST_CASE("the owner recorder keeps what the disk lacks, under the layer root only", "[build_copy][root]") {
    aishell::test::require_root();
    Context root;
    root.write("a/b/c", "c");
    root.write("a/bc", "x");
    UniqueFd tree(::open(root.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    OwnerRecorder owners(root.path.string(), tree.get());
    const std::string r = root.path.string();
    // Files owned by root (as the test made them): 1000 is not on disk, 0 is.
    for (const char* p : {"/a", "/a/b", "/a/b/c", "/a/bc"}) owners.owner_attempted(r + p, {1000, 1000});
    CHECK(owners.size() == 4);
    owners.owner_attempted(r + "/a/bc", {0, 0});  // what the disk has: no record for a new file
    CHECK(owners_in(owners.finish()) == std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{
                                            {"a", {1000, 1000}}, {"a/b", {1000, 1000}}, {"a/b/c", {1000, 1000}}});
    owners.removed(r + "/a/b");  // the tree beneath too, not a/bc
    CHECK(owners.size() == 2);
    owners.owner_attempted(r + "/a/bc", {7, 7});
    // The root itself and what is outside it are no layer entries.
    owners.owner_attempted(r, {1000, 1000});
    owners.owner_attempted(r + "/.", {1000, 1000});
    owners.owner_attempted(root.path.parent_path().string(), {1000, 1000});
    // A path through "..", cleaned.
    owners.owner_attempted(r + "/a/b/../bc", {8, 8});
    auto table = owners.finish();
    CHECK(owners_in(table) == std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{
                                  {"a", {1000, 1000}}, {"a/bc", {8, 8}}});
    // Entries gone before finish() are left out.
    fs::remove(root.path / "a/bc");
    CHECK(owners_in(owners.finish()) == std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{
                                            {"a", {1000, 1000}}});
}

TEST_CASE("an owner the disk has is recorded for entries overlayfs merged or copied up", "[build_copy][root]") {
    aishell::test::require_root();
    Context root;
    root.write("copied-up", "c");
    root.write("new-file", "n");
    fs::create_directories(root.path / "merged");
    fs::create_directories(root.path / "replaced");
    // As overlayfs marks them in an upper dir mounted with userxattr.
    REQUIRE(::setxattr((root.path / "copied-up").c_str(), "user.overlay.origin", "", 0, 0) == 0);
    REQUIRE(::setxattr((root.path / "replaced").c_str(), "user.overlay.opaque", "y", 1, 0) == 0);
    UniqueFd tree(::open(root.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    OwnerRecorder owners(root.path.string(), tree.get());
    for (const char* p : {"/copied-up", "/new-file", "/merged", "/replaced"})
        owners.owner_attempted(root.path.string() + p, {0, 0});
    // copied-up and merged may carry another owner in a lower layer's table: 0:0 is recorded
    // so that it does not come back; the new file and the opaque directory have no lower.
    CHECK(owners_in(owners.finish()) == std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{
                                            {"copied-up", {0, 0}}, {"merged", {0, 0}}});
}

TEST_CASE("COPY --from keeps the owners the source stage's layers recorded", "[build_copy][root]") {
    // The source stage: one layer tree (its root is the source root) whose table says what
    // the disk could not keep.
    Context layers;
    layers.write("src/out/app", "app");
    layers.write("src/out/lib/data", "d");
    fs::create_symlink("data", layers.path / "src/out/lib/current");
    oci::OwnerTable recorded;
    for (const char* p : {"out/lib", "out/lib/data", "out/lib/current"}) {
        UniqueFd fd(::open((layers.path / "src").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        recorded.set(p, oci::OwnerRecord::for_entry({1234, 2345}, *oci::entry_identity_at(fd.get(), p)));
    }
    write_file_atomic(oci::layer_owner_table_path(layers.path, "src"), recorded.serialize());
    auto source_owners = oci::LayeredOwners::load(layers.path, {"src"});
    UniqueFd src(::open((layers.path / "src").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));

    Context root;
    CopyRequest from = copy_req({"out"}, "/opt/");
    from.preserve_owner = true;
    std::string text = in_single_userns([&] {
        UniqueFd tree(::open(root.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        OwnerRecorder owners(root.path.string(), tree.get());
        copy_files(src.get(), root.path.string(), from, nullptr, &owners, &source_owners);
        return owners.finish().serialize();
    });
    const std::pair<std::uint32_t, std::uint32_t> o{1234, 2345}, root_owner{0, 0};
    // /opt (the dest dir, the source's "out": root's) and its parents are directories the disk
    // has right; app was root's in the source.
    CHECK(owners_in(oci::OwnerTable::parse(text, "owners")) ==
          std::map<std::string, std::pair<std::uint32_t, std::uint32_t>>{
              {"opt", root_owner}, {"opt/lib", o}, {"opt/lib/current", o}, {"opt/lib/data", o}});
}

TEST_CASE("ADD of a tar resolves its symlinks with the destination as the root", "[build_copy]") {
    // Docker's chrootarchive.Untar: "l -> .." then "l/etc/f" writes DEST/etc/f and keeps l; a
    // link pointing at / or far above lands in DEST too.
    Context tree, ctx;
    fs::create_symlink("..", tree.path / "up");
    fs::create_symlink("/", tree.path / "abs");
    fs::create_symlink("../../..", tree.path / "deep");
    const std::string cmd = "cd '" + tree.path.string() + "' && mkdir -p m/up/etc m/abs/etc m/deep/etc && " +
                            "echo 1 > m/up/etc/f && echo 2 > m/abs/etc/g && echo 3 > m/deep/etc/h && tar -cf '" +
                            (ctx.path / "l.tar").string() + "' up abs deep && tar -C m -rf '" +
                            (ctx.path / "l.tar").string() + "' up/etc/f abs/etc/g deep/etc/h";
    REQUIRE(std::system(cmd.c_str()) == 0);
    for (const char* dest : {"/sub", "/a/b/"}) {
        Context root;
        fs::create_directories(root.path / "etc");
        CopyRequest add = copy_req({"l.tar"}, dest);
        add.extract_archives = true;
        add.instruction = "ADD";
        copy_files(ctx.fd.get(), root.path.string(), add, nullptr);
        const fs::path d = root.path / fs::path(dest).relative_path();
        INFO(dest);
        CHECK(fs::read_symlink(d / "up") == "..");
        CHECK(fs::read_symlink(d / "abs") == "/");
        CHECK(fs::read_symlink(d / "deep") == "../../..");
        CHECK(read_file(d / "etc/f") == "1\n");
        CHECK(read_file(d / "etc/g") == "2\n");
        CHECK(read_file(d / "etc/h") == "3\n");
        CHECK(fs::is_empty(root.path / "etc"));  // nothing above the destination
    }
}

TEST_CASE("ADD of a tar into a symlinked destination writes beneath its target", "[build_copy]") {
    Context tree, ctx;
    tree.write("f", "f\n");
    const std::string cmd = "tar -C '" + tree.path.string() + "' -cf '" + (ctx.path / "t.tar").string() + "' f";
    REQUIRE(std::system(cmd.c_str()) == 0);
    Context root;
    fs::create_directories(root.path / "real");
    fs::create_symlink("real", root.path / "link");  // relative: the test runs without a chroot
    CopyRequest add = copy_req({"t.tar"}, "/link/");
    add.extract_archives = true;
    add.instruction = "ADD";
    copy_files(ctx.fd.get(), root.path.string(), add, nullptr);
    CHECK(fs::is_symlink(root.path / "link"));
    CHECK(read_file(root.path / "real/f") == "f\n");
}

TEST_CASE("a copied directory's destination is made 0755, its subdirectories keep their modes", "[build_copy]") {
    Context ctx;
    ctx.write("d/sub/f", "f");
    REQUIRE(::chmod((ctx.path / "d").c_str(), 0775) == 0);
    REQUIRE(::chmod((ctx.path / "d/sub").c_str(), 0700) == 0);
    Context root;
    copy_files(ctx.fd.get(), root.path.string(), copy_req({"d"}, "/d"), nullptr);
    CHECK((Stat(root.path / "d").st.st_mode & 07777) == 0755);
    CHECK((Stat(root.path / "d/sub").st.st_mode & 07777) == 0700);
    // An existing destination keeps its mode; --chmod makes a missing one with that mode.
    fs::create_directories(root.path / "e");
    REQUIRE(::chmod((root.path / "e").c_str(), 0711) == 0);
    copy_files(ctx.fd.get(), root.path.string(), copy_req({"d"}, "/e"), nullptr);
    CHECK((Stat(root.path / "e").st.st_mode & 07777) == 0711);
    CopyRequest chmod = copy_req({"d"}, "/m");
    chmod.chmod = 0750;
    copy_files(ctx.fd.get(), root.path.string(), chmod, nullptr);
    CHECK((Stat(root.path / "m").st.st_mode & 07777) == 0750);
}

TEST_CASE("a source directory meeting a symlink or a file below the destination is refused", "[build_copy]") {
    // fsutil's copyDirectoryOnly: "cannot copy to non-directory" (BuildKit), never followed.
    Context ctx;
    ctx.write("t/x/f", "f");
    Context root;
    fs::create_directories(root.path / "dir");
    fs::create_symlink("dir", root.path / "x");
    CHECK_THROWS_WITH(copy_files(ctx.fd.get(), root.path.string(), copy_req({"t/"}, "/"), nullptr),
                      Catch::Contains("COPY: cannot copy to non-directory: " + (root.path / "x").string()));
    CHECK(fs::is_empty(root.path / "dir"));
    fs::remove(root.path / "x");
    std::ofstream(root.path / "x") << "file";
    CHECK_THROWS_WITH(copy_files(ctx.fd.get(), root.path.string(), copy_req({"t/"}, "/"), nullptr),
                      Catch::Contains("cannot copy to non-directory"));
    // The destination itself is reached through its symlink.
    fs::remove(root.path / "x");
    fs::create_symlink("dir", root.path / "x");
    copy_files(ctx.fd.get(), root.path.string(), copy_req({"t/x"}, "/x"), nullptr);
    CHECK(read_file(root.path / "dir/f") == "f");
}

TEST_CASE(".dockerignore exceptions: an excluded directory exists only with an entry kept below it", "[build_copy]") {
    Context ctx;
    ctx.write("d/keep", "k");
    ctx.write("d/drop", "x");
    ctx.write("e/drop", "x");
    {
        // "**" with "!d/keep": d is in the context (as keep's parent), e is not.
        IgnoreMatcher ignore({"**", "!d/keep"});
        CHECK(expand_source(ctx.fd.get(), "d", &ignore, "COPY") == std::vector<std::string>{"d"});
        CHECK_THROWS_WITH(expand_source(ctx.fd.get(), "e", &ignore, "COPY"), Catch::Contains("excluded by .dockerignore: e"));
        Context root;
        copy_files(ctx.fd.get(), root.path.string(), copy_req({"d"}, "/d"), &ignore);
        CHECK(read_file(root.path / "d/keep") == "k");
        CHECK_FALSE(fs::exists(root.path / "d/drop"));
    }
    {
        // "**" with "!d/sub/keep" and no d/sub: nothing of d is in the context.
        IgnoreMatcher ignore({"**", "!d/sub/keep", "!Dockerfile"});
        ctx.write("Dockerfile", "FROM scratch\n");
        Context root;
        copy_files(ctx.fd.get(), root.path.string(), copy_req({"."}, "/c/"), &ignore);
        CHECK(fs::exists(root.path / "c/Dockerfile"));
        CHECK_FALSE(fs::exists(root.path / "c/d"));
        CHECK_FALSE(fs::exists(root.path / "c/e"));
        // The cache key sees the same context: d's presence does not change it.
        const auto before = source_digest(ctx.fd.get(), copy_req({"."}, "/c/"), &ignore);
        fs::create_directories(ctx.path / "d/empty");
        CHECK(source_digest(ctx.fd.get(), copy_req({"."}, "/c/"), &ignore) == before);
    }
    {
        // "d" with "!**/keep": a wildcard exception makes BuildKit's context walk look inside d
        // (fsutil: onlyPrefixExcludeExceptions is false), so d/keep is sent; Docker's classic
        // builder skips d (tests/conformance/intentional-differences.md).
        IgnoreMatcher ignore({"d", "!**/keep"});
        Context root;
        copy_files(ctx.fd.get(), root.path.string(), copy_req({"."}, "/c/"), &ignore);
        CHECK(read_file(root.path / "c/d/keep") == "k");
        CHECK_FALSE(fs::exists(root.path / "c/d/drop"));
    }
}

TEST_CASE("ADD of a tar replaces a directory in a member's way below a destination that is not /", "[build_copy]") {
    // go-archive's Unpack removes what stands where a member goes unless both are directories.
    Context tree, ctx;
    tree.write("d", "file now\n");
    const std::string cmd = "tar -C '" + tree.path.string() + "' -cf '" + (ctx.path / "d.tar").string() + "' d";
    REQUIRE(std::system(cmd.c_str()) == 0);
    Context root;
    fs::create_directories(root.path / "x/d/sub");
    std::ofstream(root.path / "x/d/sub/f") << "old";
    CopyRequest add = copy_req({"d.tar"}, "/x/");
    add.extract_archives = true;
    add.instruction = "ADD";
    copy_files(ctx.fd.get(), root.path.string(), add, nullptr);
    CHECK(read_file(root.path / "x/d") == "file now\n");
}
