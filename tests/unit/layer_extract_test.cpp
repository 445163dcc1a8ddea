// Layer extraction and unpacking: the crafted-tar corpus (tests/fixtures/crafted/make_corpus.py,
// generated into a temp dir at test time) through both resolvers, overlay-format whiteouts and
// opaque dirs, metadata, compression, diff_id checks and interrupted unpacks.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/layer_extract.hpp"
#include "oci/layer_unpack.hpp"
#include "oci/lease.hpp"
#include "oci/store.hpp"
#include "child_process.hpp"
#include "temp_dir.hpp"
#include "skip.hpp"

namespace fs = std::filesystem;
using aishell::UniqueFd;
using aishell::oci::ExtractOptions;
using aishell::oci::ExtractStats;
namespace mt = aishell::oci::media_type;

namespace {

const fs::path kSourceDir = fs::path(AISHELL_TESTS_DIR).lexically_normal();  // tests/
const fs::path kCorpusScript = kSourceDir / "fixtures" / "crafted" / "make_corpus.py";

UniqueFd open_dir(const fs::path& p) {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(fd);
    return fd;
}

void run(const std::string& cmd) {
    INFO(cmd);
    REQUIRE(std::system(cmd.c_str()) == 0);
}

struct Corpus {
    TempDir dir;
    fs::path canary_file, canary_dir, out;
    nlohmann::json cases;
    Corpus() {
        canary_file = dir.path / "canary";
        canary_dir = dir.path / "canary_dir";
        out = dir.path / "corpus";
        aishell::write_file_atomic(canary_file, "canary\n", 0640);
        fs::create_directory(canary_dir);
        aishell::write_file_atomic(canary_dir / "inner", "inner\n", 0600);
        fs::permissions(canary_dir, fs::perms(0750));
        run("/usr/bin/python3 " + kCorpusScript.string() + " " + out.string() + " --canary-file " +
            canary_file.string() + " --canary-dir " + canary_dir.string());
        cases = nlohmann::json::parse(aishell::read_file(out / "cases.json"));
    }
};

// Bytes, mode, owner and mtime of the canaries (and the dir's listing).
std::string snapshot(const Corpus& c) {
    std::string s;
    for (const auto& p : {c.canary_file, c.canary_dir, c.canary_dir / "inner"}) {
        struct stat st;
        REQUIRE(::lstat(p.c_str(), &st) == 0);
        s += p.string() + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) + ":" +
             std::to_string(st.st_gid) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec) + " " + std::to_string(st.st_nlink) + "\n";
        if (S_ISREG(st.st_mode)) s += aishell::read_file(p);
    }
    for (const auto& e : fs::directory_iterator(c.canary_dir)) s += e.path().string() + "\n";
    // The work dir's listing, without the extraction's own dest (made after the first snapshot).
    for (const auto& e : fs::directory_iterator(c.dir.path))
        if (e.path().filename() != "dest") s += e.path().string() + "\n";
    return s;
}

ExtractStats extract_file(const fs::path& tar, mt::Compression comp, const fs::path& dest,
                          const ExtractOptions& options = {}) {
    UniqueFd in(::open(tar.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(in);
    UniqueFd d = open_dir(dest);
    return aishell::oci::extract_layer(in.get(), comp, d.get(), options);
}

struct stat lstat_of(const fs::path& p) {
    struct stat st;
    INFO(p);
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return st;
}

bool is_whiteout(const fs::path& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

std::string xattr_of(const fs::path& p, const char* name) {
    char buf[256];
    ssize_t n = ::lgetxattr(p.c_str(), name, buf, sizeof buf);
    return n < 0 ? std::string("<none>") : std::string(buf, static_cast<std::size_t>(n));
}

void check_present(const fs::path& dest, const nlohmann::json& present) {
    for (const auto& item : present) {
        fs::path p = dest / item[0].get<std::string>();
        std::string kind = item[1];
        struct stat st = lstat_of(p);
        INFO(p << " should be " << kind);
        if (kind == "file") CHECK(S_ISREG(st.st_mode));
        else if (kind == "dir") CHECK(S_ISDIR(st.st_mode));
        else if (kind == "symlink") CHECK(S_ISLNK(st.st_mode));
        else if (kind == "whiteout") CHECK(is_whiteout(p));
        else if (kind == "fifo") CHECK(S_ISFIFO(st.st_mode));
        else FAIL("unknown kind " << kind);
    }
}

// Catch runs the test case once per section: the corpus and the canaries' first snapshot are
// made once per process (every section leaves the canaries as they were, or fails).
struct SharedCorpus {
    Corpus corpus;
    std::string before = snapshot(corpus);
};

SharedCorpus& shared_corpus() {
    static SharedCorpus shared;
    return shared;
}

// The corpus in a forked child whose openat2 fails with ENOSYS (as before Linux 5.6): the
// extraction goes through the resolver's fallback walk (common/resolve_path.hpp) the way it
// would there. Returns "" when every case ends as expected and nothing outside changed.
std::string corpus_without_openat2() {
    const SharedCorpus& shared = shared_corpus();
    const Corpus& c = shared.corpus;
    return aishell::test::output_without_openat2([&] {
        std::string wrong;
        for (const auto& tc : c.cases) {
            const std::string name = tc["name"];
            fs::path dest = c.dir.path / "dest";
            fs::create_directory(dest);
            ExtractOptions opts;
            opts.owners = ExtractOptions::Owners::Preserve;
            std::string error;
            try {
                extract_file(tc["file"].get<std::string>(), mt::Compression::None, dest, opts);
            } catch (const aishell::Error& e) {
                error = e.message();
            }
            if (tc["expect"] == "error" && error.find(tc["error"].get<std::string>()) == std::string::npos)
                wrong += name + ": expected an error with " + tc["error"].get<std::string>() + ", got '" + error + "'\n";
            if (tc["expect"] != "error" && !error.empty()) wrong += name + ": " + error + "\n";
            if (snapshot(c) != shared.before) wrong += name + ": something outside the layer changed\n";
            UniqueFd parent = open_dir(c.dir.path);
            aishell::oci::remove_tree_at(parent.get(), "dest");
        }
        return wrong;
    });
}

void run_corpus(bool force_walk) {
    const SharedCorpus& shared = shared_corpus();
    const Corpus& c = shared.corpus;
    const std::string& before = shared.before;
    REQUIRE(c.cases.size() >= 40);
    for (const auto& tc : c.cases) {
        std::string name = tc["name"];
        DYNAMIC_SECTION(name << (force_walk ? " (O_NOFOLLOW walk)" : " (openat2)")) {
            INFO(tc["what"].get<std::string>());
            fs::path dest = c.dir.path / "dest";
            {
                UniqueFd parent = open_dir(c.dir.path);
                aishell::oci::remove_tree_at(parent.get(), "dest");  // a failed section's leftover
            }
            fs::create_directory(dest);
            ExtractOptions opts;
            opts.force_walk = force_walk;
            opts.owners = ExtractOptions::Owners::Preserve;
            std::string error;
            try {
                auto stats = extract_file(tc["file"].get<std::string>(), mt::Compression::None, dest, opts);
                CHECK(stats.used_walk_fallback == force_walk);
            } catch (const aishell::Error& e) {
                error = e.message();
            }
            INFO("error: " << error);
            if (tc["expect"] == "error") {
                CHECK_THAT(error, Catch::Contains(tc["error"].get<std::string>()));
                CHECK_THAT(error, Catch::StartsWith("layer entry '"));
            } else {
                CHECK(error.empty());
                check_present(dest, tc["present"]);
            }
            CHECK(snapshot(c) == before);
            UniqueFd parent = open_dir(c.dir.path);
            aishell::oci::remove_tree_at(parent.get(), "dest");
        }
    }
}

std::string compress(const fs::path& tar, mt::Compression comp) {
    if (comp == mt::Compression::Gzip) run("gzip -k -c " + tar.string() + " > " + tar.string() + ".gz");
    if (comp == mt::Compression::Zstd) run("zstd -q -k -f " + tar.string() + " -o " + tar.string() + ".zst");
    return tar.string() + (comp == mt::Compression::Gzip ? ".gz" : comp == mt::Compression::Zstd ? ".zst" : "");
}

}  // namespace

TEST_CASE("crafted tars cannot touch anything outside the layer (openat2)", "[layer_extract]") {
    run_corpus(false);
}

TEST_CASE("crafted tars cannot touch anything outside the layer (O_NOFOLLOW walk)", "[layer_extract]") {
    run_corpus(true);
}

TEST_CASE("crafted tars cannot touch anything outside the layer (openat2 blocked by seccomp)", "[layer_extract]") {
    REQUIRE(shared_corpus().corpus.cases.size() >= 40);
    CHECK(corpus_without_openat2() == "");
}

TEST_CASE("features layer: overlay whiteouts, opaque dirs, hardlinks, modes, owners, mtimes, xattrs",
          "[layer_extract][root]") {
    aishell::test::require_root();  // owners 1000 and /dev/null need root (run the unit tests as root)
    Corpus c;
    fs::path dest = c.dir.path / "dest";
    fs::create_directory(dest);
    ExtractOptions opts;
    opts.owners = ExtractOptions::Owners::Preserve;
    opts.force_walk = GENERATE(false, true);
    auto stats = extract_file(c.out / "features.tar", mt::Compression::None, dest, opts);

    CHECK(stats.diff_id == aishell::oci::sha256_of(aishell::read_file(c.out / "features.tar")));
    CHECK(stats.used_walk_fallback == opts.force_walk);
    CHECK(is_whiteout(dest / "gone"));
    CHECK_FALSE(fs::exists(dest / ".wh.gone"));
    CHECK(xattr_of(dest / "opq", "user.overlay.opaque") == "y");
    CHECK(fs::exists(dest / "opq/kept"));
    CHECK_FALSE(fs::exists(dest / "opq/.wh..wh..opq"));
    CHECK_FALSE(fs::exists(dest / "opq/.wh..wh.plnk"));
    CHECK(stats.whiteouts == 1);
    CHECK(stats.opaque_dirs == 1);

    // Hardlinks share the inode, also when the tar names the target absolutely.
    CHECK(lstat_of(dest / "bin/su-link").st_ino == lstat_of(dest / "bin/su").st_ino);
    CHECK(lstat_of(dest / "bin/abs-link").st_ino == lstat_of(dest / "bin/su").st_ino);
    CHECK(lstat_of(dest / "bin/su").st_nlink == 3);
    CHECK(stats.hardlinks == 2);
    // setuid/setgid survive the chown.
    CHECK((lstat_of(dest / "bin/su").st_mode & 07777) == 04755);
    CHECK((lstat_of(dest / "bin/sg").st_mode & 07777) == 02755);
    CHECK(lstat_of(dest / "bin/sg").st_gid == 42);
    CHECK(lstat_of(dest / "owned").st_uid == 1000);
    CHECK(lstat_of(dest / "owned").st_gid == 1000);
    // Symlink targets are kept verbatim, absolute ones too.
    CHECK(fs::read_symlink(dest / "bin/sh") == "/bin/busybox");
    CHECK(fs::read_symlink(dest / "usrbin") == "usr/bin");
    CHECK(lstat_of(dest / "bin/sh").st_mtim.tv_sec == 1'600'000'000);

    // mtimes, on dirs too (applied after their contents were written).
    CHECK(lstat_of(dest / "etc").st_mtim.tv_sec == 1'000'000);
    CHECK(lstat_of(dest / "etc/passwd").st_mtim.tv_sec == 1'000'001);
    CHECK(lstat_of(dest / "bin").st_mtim.tv_sec == 1'000'002);
    CHECK(lstat_of(dest / "bin/su").st_mtim.tv_sec == 1'000'003);
    CHECK(lstat_of(dest / "late").st_mtim.tv_sec == 1'000'007);
    CHECK((lstat_of(dest / "late").st_mode & 07777) == 0750);
    CHECK(lstat_of(dest / "late/deep/dir").st_mtim.tv_sec == 1'000'006);
    CHECK((lstat_of(dest / "late/deep").st_mode & 07777) == 0755);  // implicit parent

    // umoci#310: 000 and read-only dirs get their contents, then their real modes.
    CHECK((lstat_of(dest / "locked").st_mode & 07777) == 0);
    CHECK(lstat_of(dest / "locked").st_mtim.tv_sec == 1'000'004);
    CHECK((lstat_of(dest / "locked/secret").st_mode & 07777) == 0);
    CHECK(aishell::read_file(dest / "locked/secret") == "secret\n");  // root reads anyway
    CHECK((lstat_of(dest / "ro").st_mode & 07777) == 0555);
    CHECK(aishell::read_file(dest / "ro/file") == "ro\n");

    CHECK(S_ISFIFO(lstat_of(dest / "fifo").st_mode));
    CHECK((lstat_of(dest / "fifo").st_mode & 07777) == 0640);
    CHECK(S_ISCHR(lstat_of(dest / "dev/null").st_mode));
    CHECK(lstat_of(dest / "dev/null").st_rdev == makedev(1, 3));
    CHECK((lstat_of(dest / "dev/null").st_mode & 07777) == 0666);

    // user.* kept; user.overlay.* and trusted.* from the archive are not.
    CHECK(xattr_of(dest / "xattr", "user.aishell") == "yes");
    CHECK(xattr_of(dest / "xattr", "user.overlay.redirect") == "<none>");
    CHECK(xattr_of(dest / "xattr", "trusted.evil") == "<none>");
    CHECK(stats.skipped_xattrs == 2);

    // Replacements: a file by a dir, a dir (with contents) by a file.
    CHECK(S_ISDIR(lstat_of(dest / "replace").st_mode));
    CHECK((lstat_of(dest / "replace").st_mode & 07777) == 0700);
    CHECK(aishell::read_file(dest / "replace2") == "now a file\n");
}

TEST_CASE("rootless option skips device nodes and counts them for one note", "[layer_extract]") {
    Corpus c;
    fs::path dest = c.dir.path / "dest";
    fs::create_directory(dest);
    ExtractOptions opts;
    opts.rootless = true;
    auto stats = extract_file(c.out / "features.tar", mt::Compression::None, dest, opts);
    CHECK(stats.skipped_devices == 1);
    CHECK(stats.devices == 0);
    CHECK_FALSE(fs::exists(fs::symlink_status(dest / "dev/null")));
    CHECK(S_ISFIFO(lstat_of(dest / "fifo").st_mode));
    CHECK(aishell::oci::summary_note(stats) ==
          "skipped 1 device node(s) (not permitted without root), skipped 2 xattr(s)");
}

TEST_CASE("gzip, zstd and plain layers give the same tree and the uncompressed diff_id", "[layer_extract]") {
    Corpus c;
    fs::path tar = c.out / "features.tar";
    auto expected = aishell::oci::sha256_of(aishell::read_file(tar));
    for (auto comp : {mt::Compression::None, mt::Compression::Gzip, mt::Compression::Zstd}) {
        fs::path dest = c.dir.path / ("dest" + std::to_string(static_cast<int>(comp)));
        fs::create_directory(dest);
        auto stats = extract_file(compress(tar, comp), comp, dest);
        CHECK(stats.diff_id == expected);
        CHECK(stats.uncompressed_bytes == fs::file_size(tar));
        CHECK(aishell::read_file(dest / "etc/passwd") == "root:x:0:0:root:/root:/bin/sh\n");
        CHECK(stats.files == 12);
    }
}

TEST_CASE("a truncated or corrupt stream is an error", "[layer_extract]") {
    Corpus c;
    fs::path tar = c.out / "features.tar";
    std::string gz = aishell::read_file(compress(tar, mt::Compression::Gzip));
    aishell::write_file_atomic(c.dir.path / "cut.gz", gz.substr(0, gz.size() / 2));
    fs::create_directory(c.dir.path / "dest");
    CHECK_THROWS_AS(extract_file(c.dir.path / "cut.gz", mt::Compression::Gzip, c.dir.path / "dest"),
                    aishell::Error);
    aishell::write_file_atomic(c.dir.path / "junk", std::string(4096, 'x'));
    CHECK_THROWS_AS(extract_file(c.dir.path / "junk", mt::Compression::None, c.dir.path / "dest"),
                    aishell::Error);
}

namespace {

struct StoreFixture {
    TempDir dir;
    aishell::oci::Store store = aishell::oci::Store::open(dir.path / "store");
    Corpus corpus;

    aishell::oci::Descriptor put_layer(mt::Compression comp, std::string_view media_type) {
        std::string blob = aishell::read_file(compress(corpus.out / "features.tar", comp));
        aishell::oci::Descriptor d;
        d.media_type = media_type;
        d.digest = store.put_blob(blob);
        d.size = static_cast<std::int64_t>(blob.size());
        return d;
    }
    aishell::oci::Digest diff_id() const {
        return aishell::oci::sha256_of(aishell::read_file(corpus.out / "features.tar"));
    }
    std::size_t tmp_entries() const {
        std::size_t n = 0;
        for ([[maybe_unused]] const auto& e : fs::directory_iterator(store.tmp_dir())) ++n;
        return n;
    }
};

}  // namespace

TEST_CASE("ensure_layer_unpacked installs layers/<diff_id hex> once", "[layer_extract]") {
    StoreFixture f;
    auto layer = f.put_layer(mt::Compression::Zstd, mt::kOciLayerZstd);
    std::vector<std::string> notes;
    ExtractOptions opts;
    opts.note = [&](const std::string& n) { notes.push_back(n); };
    auto r = aishell::oci::ensure_layer_unpacked(f.store, layer, f.diff_id(), opts);
    CHECK(r.unpacked);
    CHECK(r.path == f.store.layers_dir() / std::string(f.diff_id().encoded()));
    CHECK(is_whiteout(r.path / "gone"));
    CHECK(f.tmp_entries() == 0);
    CHECK(notes.size() == 1);
    auto again = aishell::oci::ensure_layer_unpacked(f.store, layer, f.diff_id(), opts);
    CHECK_FALSE(again.unpacked);
    CHECK(notes.size() == 1);
}

TEST_CASE("ensure_layer_unpacked through a leased store leases the tree first, and records it made once", "[layer_extract][lease]") {
    StoreFixture f;
    auto layer = f.put_layer(mt::Compression::Gzip, mt::kOciLayerGzip);
    auto lease = aishell::oci::Lease::create(f.store, "test");
    aishell::oci::Store leased = f.store.with_lease(lease);
    using aishell::oci::LeaseEntry;
    CHECK(aishell::oci::ensure_layer_unpacked(leased, layer, f.diff_id(), {}).unpacked);
    CHECK(lease->entries() == std::vector<LeaseEntry>{LeaseEntry::layer(f.diff_id()), LeaseEntry::layer(f.diff_id(), true)});
    // Another command that finds the tree uses it; it did not make it.
    auto other = aishell::oci::Lease::create(f.store, "test");
    CHECK_FALSE(aishell::oci::ensure_layer_unpacked(f.store.with_lease(other), layer, f.diff_id(), {}).unpacked);
    CHECK(other->entries() == std::vector<LeaseEntry>{LeaseEntry::layer(f.diff_id())});
}

TEST_CASE("a diff_id mismatch is an error and leaves no layers/<hex>", "[layer_extract]") {
    StoreFixture f;
    auto layer = f.put_layer(mt::Compression::Gzip, mt::kOciLayerGzip);
    auto wrong = aishell::oci::sha256_of("something else");
    try {
        aishell::oci::ensure_layer_unpacked(f.store, layer, wrong);
        FAIL("no error");
    } catch (const aishell::Error& e) {
        CHECK(e.message() == "unpack layer " + layer.digest.short_form() + ": diff_id mismatch: the image config says " +
                                 wrong.str() + ", the layer tar is " + f.diff_id().str());
    }
    CHECK_FALSE(fs::exists(f.store.layers_dir() / std::string(wrong.encoded())));
    CHECK_FALSE(fs::exists(f.store.layers_dir() / std::string(f.diff_id().encoded())));
    CHECK(f.tmp_entries() == 0);  // the temp tree (with its 000 dir) was removed
}

TEST_CASE("an interrupted unpack leaves nothing a later run would trust", "[layer_extract]") {
    StoreFixture f;
    std::string tar = aishell::read_file(f.corpus.out / "features.tar");
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[1]);
        try {
            aishell::oci::unpack_layer_stream(f.store, fds[0], mt::Compression::None, f.diff_id());
        } catch (...) {
        }
        ::_exit(0);
    }
    ::close(fds[0]);
    // Half the tar, then wait until the child has started writing the temp tree, then kill it.
    REQUIRE(::write(fds[1], tar.data(), tar.size() / 2) == static_cast<ssize_t>(tar.size() / 2));
    bool started = false;
    for (int i = 0; i < 200 && !started; ++i) {
        for (const auto& e : fs::directory_iterator(f.store.tmp_dir()))
            if (e.path().filename().string().rfind("unpack-", 0) == 0 && fs::exists(e.path() / "etc/passwd"))
                started = true;
        if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(started);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(fds[1]);
    CHECK(WIFSIGNALED(status));
    fs::path target = f.store.layers_dir() / std::string(f.diff_id().encoded());
    CHECK_FALSE(fs::exists(target));
    CHECK(f.tmp_entries() == 1);  // the leftover, for GC
    // A later run unpacks it fully.
    auto layer = f.put_layer(mt::Compression::None, mt::kOciLayerTar);
    auto r = aishell::oci::ensure_layer_unpacked(f.store, layer, f.diff_id());
    CHECK(r.unpacked);
    CHECK(aishell::read_file(target / "locked/secret") == "secret\n");
}

TEST_CASE("later layers write beneath 000 and read-only dirs of earlier ones (umoci#310)", "[layer_extract][root]") {
    aishell::test::require_root();  // the overlay mount needs root
    Corpus c;
    fs::path lower = c.dir.path / "l1", upper_layer = c.dir.path / "l2";
    fs::create_directory(lower);
    fs::create_directory(upper_layer);
    extract_file(c.out / "features.tar", mt::Compression::None, lower);
    run("cd " + c.dir.path.string() + " && /usr/bin/python3 -c \"import tarfile,io\n"
        "t=tarfile.open('second.tar','w')\n"
        "for n,data in (('locked/new',b'new'),('ro/new',b'ro-new')):\n"
        "  i=tarfile.TarInfo(n); i.size=len(data); t.addfile(i,io.BytesIO(data))\n"
        "t.close()\"");
    auto stats = extract_file(c.dir.path / "second.tar", mt::Compression::None, upper_layer);
    CHECK(stats.files == 2);
    CHECK((lstat_of(lower / "locked").st_mode & 07777) == 0);  // the first layer is unaffected
    CHECK((lstat_of(upper_layer / "locked").st_mode & 07777) == 0755);

    // The overlay view (in a private mount namespace of a child, so nothing leaks on failure).
    fs::path merged = c.dir.path / "merged", work = c.dir.path / "work", up = c.dir.path / "up";
    for (const auto& p : {merged, work, up}) fs::create_directory(p);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        std::string opts = "lowerdir=" + upper_layer.string() + ":" + lower.string() + ",upperdir=" + up.string() +
                           ",workdir=" + work.string() + ",userxattr";
        if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            ::mount("overlay", merged.c_str(), "overlay", 0, opts.c_str()) != 0)
            ::_exit(2);
        bool ok = aishell::read_file(merged / "locked/secret") == "secret\n" &&
                  aishell::read_file(merged / "locked/new") == "new" && !fs::exists(merged / "gone") &&
                  aishell::read_file(merged / "ro/new") == "ro-new";
        aishell::write_file_atomic(merged / "locked/written", "w");
        ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(fs::exists(up / "locked/written"));
}

TEST_CASE("single-mapping user namespace: unmapped owners are counted, whiteouts still work", "[layer_extract][root]") {
    aishell::test::require_root();
    Corpus c;
    fs::path dest = c.dir.path / "dest";
    fs::create_directory(dest);
    // Map only one uid/gid (host root, as the caller) to 0, as single mode does: no
    // capabilities on the host.
    int status = 0;
    std::string out = aishell::test::output_of_child(
        [&]() -> std::string {
            bool mapped = aishell::test::enter_single_id_userns();
            try {
                ExtractOptions opts;
                auto s = extract_file(c.out / "features.tar", mt::Compression::None, dest, opts);
                return std::to_string(mapped) + " " + std::to_string(s.unmapped_owners) + " " +
                       std::to_string(s.skipped_devices) + " " + std::to_string(s.whiteouts);
            } catch (const std::exception& e) {
                return std::string("error ") + e.what();
            }
        },
        status);
    // owned (1000:1000) and bin/sg (gid 42) are unmapped; /dev/null needs CAP_MKNOD on the host.
    CHECK(out == "1 2 1 1");
    CHECK(is_whiteout(dest / "gone"));
    CHECK(lstat_of(dest / "owned").st_uid == 0);
    CHECK((lstat_of(dest / "bin/su").st_mode & 07777) == 04755);
}
