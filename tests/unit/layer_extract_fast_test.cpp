// Layer extraction's fast paths (see layer_extract.cpp): entries are created with O_EXCL and
// their final mode, chown/chmod are left out when creation already gave the wanted owner and
// mode, file data goes out in coalesced writes, parents come from a small fd cache, and gzip is
// inflated by ISA-L. Each test checks that the result is exactly what the tar says in the cases
// where a shortcut would be wrong: other umasks, a setgid root, a default ACL, names reused by
// later entries, directories replaced while cached, sparse and large files, odd gzip streams.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/digest.hpp"
#include "oci/layer_extract.hpp"
#include "oci/layer_unpack.hpp"
#include "oci/store.hpp"
#include "temp_dir.hpp"
#include "skip.hpp"

namespace fs = std::filesystem;
using aishell::UniqueFd;
using aishell::oci::ExtractOptions;
using aishell::oci::ExtractStats;
namespace mt = aishell::oci::media_type;

namespace {

// umask is process-wide; the unit tests run on one thread.
class UmaskGuard {
public:
    explicit UmaskGuard(mode_t m) : old_(::umask(m)) {}
    ~UmaskGuard() { ::umask(old_); }
    UmaskGuard(const UmaskGuard&) = delete;
    UmaskGuard& operator=(const UmaskGuard&) = delete;

private:
    mode_t old_;
};

void run(const std::string& cmd) {
    INFO(cmd);
    REQUIRE(std::system(cmd.c_str()) == 0);
}

// Writes `script` (Python, with `tarfile`, `io`, `os` and helpers f/d/sym/hard/wh imported) to
// dir/make.py and runs it there; it writes its tars into dir.
void make_tars(const fs::path& dir, const std::string& script) {
    const std::string prelude = R"PY(
import gzip, io, os, tarfile
def info(name, kind, mode, uid=0, gid=0, mtime=1_000_000, linkname=""):
    ti = tarfile.TarInfo(name); ti.type = kind; ti.mode = mode; ti.uid = uid; ti.gid = gid
    ti.mtime = mtime; ti.linkname = linkname; return ti
def f(name, data=b"x", mode=0o644, **kw):
    ti = info(name, tarfile.REGTYPE, mode, **kw); ti.size = len(data); return (ti, data)
def d(name, mode=0o755, **kw): return (info(name, tarfile.DIRTYPE, mode, **kw), None)
def sym(name, target, **kw): return (info(name, tarfile.SYMTYPE, 0o777, linkname=target, **kw), None)
def hard(name, target, **kw): return (info(name, tarfile.LNKTYPE, 0o644, linkname=target, **kw), None)
def write(path, entries):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in entries: t.addfile(ti, io.BytesIO(data) if data is not None else None)
)PY";
    aishell::write_file_atomic(dir / "make.py", prelude + script);
    run("cd '" + dir.string() + "' && /usr/bin/python3 make.py");
}

ExtractStats extract(const fs::path& tar, mt::Compression comp, const fs::path& dest,
                     ExtractOptions::Owners owners = ExtractOptions::Owners::Preserve) {
    UniqueFd in(::open(tar.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(in);
    UniqueFd d(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(d);
    ExtractOptions opts;
    opts.owners = owners;
    return aishell::oci::extract_layer(in.get(), comp, d.get(), opts);
}

struct stat lstat_of(const fs::path& p) {
    struct stat st;
    INFO(p);
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return st;
}

mode_t mode_of(const fs::path& p) { return lstat_of(p).st_mode & 07777; }

// A default ACL (user::rwx group::rwx other::---) in the kernel's xattr format
// (include/uapi/linux/posix_acl_xattr.h): new entries beneath get no "other" bits, whatever
// the umask says.
void set_default_acl(const fs::path& dir) {
    auto le16 = [](std::string& s, std::uint16_t v) { s += char(v & 0xff), s += char(v >> 8); };
    auto le32 = [&](std::string& s, std::uint32_t v) { le16(s, v & 0xffff), le16(s, v >> 16); };
    std::string acl;
    le32(acl, 2);  // POSIX_ACL_XATTR_VERSION
    for (auto [tag, perm] : {std::pair{0x01, 7}, {0x04, 7}, {0x20, 0}}) {  // USER_OBJ, GROUP_OBJ, OTHER
        le16(acl, static_cast<std::uint16_t>(tag));
        le16(acl, static_cast<std::uint16_t>(perm));
        le32(acl, 0xffffffffu);  // ACL_UNDEFINED_ID
    }
    INFO(dir);
    REQUIRE(::setxattr(dir.c_str(), "system.posix_acl_default", acl.data(), acl.size(), 0) == 0);
}

const char* kModesScript = R"PY(
write("modes.tar", [
    f("f644"), f("f755", mode=0o755), f("f664", mode=0o664), f("f600", mode=0o600),
    f("f000", mode=0o000), f("f777", mode=0o777), f("f444", mode=0o444),
    f("suid", mode=0o4755), f("sgid", mode=0o2755), f("sticky", mode=0o1644),
    d("d755"), f("d755/in"), d("d775", mode=0o775), d("d700", mode=0o700), d("d777", mode=0o777),
    d("d555", mode=0o555), f("d555/in"), d("d000", mode=0o000), f("d000/in"),
    d("d1777", mode=0o1777), d("d2775", mode=0o2775), f("d2775/in"),
    d("deep/er/est"), f("deep/er/est/in"),
    sym("link", "f644"),
    f("owned", uid=1000, gid=1000), d("owned_dir", uid=1000, gid=1000),
    d("group_dir", gid=4242), f("group_dir/in", gid=4242), f("group_file", gid=4242),
])
)PY";

// implicit_gid: the group of the parents the tar does not list (deep, deep/er), which keep
// what creating them gave.
void check_modes(const fs::path& dest, gid_t implicit_gid = 0) {
    const std::vector<std::pair<const char*, mode_t>> want = {
        {"f644", 0644}, {"f755", 0755}, {"f664", 0664},   {"f600", 0600},   {"f000", 0},        {"f777", 0777},
        {"f444", 0444}, {"suid", 04755}, {"sgid", 02755}, {"sticky", 01644}, {"d755", 0755},     {"d755/in", 0644},
        {"d775", 0775}, {"d700", 0700}, {"d777", 0777},   {"d555", 0555},   {"d555/in", 0644},  {"d000", 0},
        {"d000/in", 0644}, {"d1777", 01777}, {"d2775", 02775}, {"d2775/in", 0644}, {"deep", 0755},
        {"deep/er", 0755}, {"deep/er/est", 0755}, {"deep/er/est/in", 0644}, {"owned", 0644}, {"owned_dir", 0755},
        {"group_dir", 0755}, {"group_dir/in", 0644}, {"group_file", 0644},
    };
    for (const auto& [name, mode] : want) {
        INFO(name);
        CHECK(mode_of(dest / name) == mode);
        struct stat st = lstat_of(dest / name);
        bool owned = std::string(name).rfind("owned", 0) == 0;
        bool implicit = std::string(name) == "deep" || std::string(name) == "deep/er";
        bool group = std::string(name).rfind("group_", 0) == 0;  // the setgid root's group
        CHECK(st.st_uid == (owned ? 1000u : 0u));
        CHECK(st.st_gid == (owned ? 1000u : group ? 4242u : implicit ? implicit_gid : 0u));
    }
    CHECK(lstat_of(dest / "link").st_uid == 0);
    CHECK(lstat_of(dest / "link").st_gid == 0);
    CHECK(aishell::read_file(dest / "d000/in") == "x");
}

}  // namespace

TEST_CASE("modes and owners are the tar's whatever the umask, a setgid root or a default ACL",
          "[layer_extract][root]") {
    aishell::test::require_root();  // owners 0 and 1000 on a root dir of gid 4242
    TempDir w;
    make_tars(w.path, kModesScript);
    const fs::path tar = w.path / "modes.tar";

    SECTION("umask 022") {
        UmaskGuard u(022);
        fs::create_directory(w.path / "dest");
        extract(tar, mt::Compression::None, w.path / "dest");
        check_modes(w.path / "dest");
    }
    SECTION("umask 077") {
        UmaskGuard u(077);
        fs::create_directory(w.path / "dest");
        extract(tar, mt::Compression::None, w.path / "dest");
        check_modes(w.path / "dest");
    }
    SECTION("umask 0") {
        UmaskGuard u(0);
        fs::create_directory(w.path / "dest");
        extract(tar, mt::Compression::None, w.path / "dest");
        check_modes(w.path / "dest");
    }
    SECTION("a setgid root of another group: entries made beneath inherit its group and setgid") {
        UmaskGuard u(022);
        fs::path dest = w.path / "dest";
        fs::create_directory(dest);
        REQUIRE(::chown(dest.c_str(), 0, 4242) == 0);
        REQUIRE(::chmod(dest.c_str(), 02755) == 0);
        extract(tar, mt::Compression::None, dest);
        check_modes(dest, 4242);
    }
    SECTION("a default ACL on the root replaces the umask") {
        UmaskGuard u(022);
        fs::path dest = w.path / "dest";
        fs::create_directory(dest);
        set_default_acl(dest);
        // What the ACL does to a plain creation: no "other" bits although the umask allows them.
        {
            UniqueFd dir(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            UniqueFd probe(::openat(dir.get(), "probe", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
            REQUIRE(probe);
            CHECK(mode_of(dest / "probe") == 0640);
            REQUIRE(::unlink((dest / "probe").c_str()) == 0);
        }
        extract(tar, mt::Compression::None, dest);
        check_modes(dest);
    }
}

TEST_CASE("later entries replace earlier ones of the same name, also cached directories", "[layer_extract][root]") {
    aishell::test::require_root();
    TempDir w;
    make_tars(w.path, R"PY(
write("replace.tar", [
    f("file", b"first\n", mode=0o600, uid=1, gid=1), f("file", b"second\n", mode=0o755),
    f("to_dir", b"was a file\n"), d("to_dir", mode=0o750), f("to_dir/in"),
    f("to_link"), sym("to_link", "file"),
    f("to_hard", b"old\n"), hard("to_hard", "file"),
    f("to_fifo"),
    f("gone", b"bye\n"), f(".wh.gone"),
    d("gone_dir"), f("gone_dir/x"), f(".wh.gone_dir"),
    d("redo", mode=0o755), f("redo/old"), d("other"), f("other/o"), f("redo/old2"),
    f("redo", b"now a file\n"), d("redo", mode=0o711), f("redo/new"),
    d("same", mode=0o755, mtime=5), f("same/a"), d("same", mode=0o500, mtime=7), f("same/b"),
])
)PY");
    fs::path dest = w.path / "dest";
    fs::create_directory(dest);
    auto stats = extract(w.path / "replace.tar", mt::Compression::None, dest);

    CHECK(aishell::read_file(dest / "file") == "second\n");
    CHECK(mode_of(dest / "file") == 0755);
    CHECK(lstat_of(dest / "file").st_uid == 0);
    CHECK(S_ISDIR(lstat_of(dest / "to_dir").st_mode));
    CHECK(mode_of(dest / "to_dir") == 0750);
    CHECK(fs::exists(dest / "to_dir/in"));
    CHECK(fs::read_symlink(dest / "to_link") == "file");
    CHECK(lstat_of(dest / "to_hard").st_ino == lstat_of(dest / "file").st_ino);
    CHECK(aishell::read_file(dest / "to_hard") == "second\n");
    CHECK(S_ISCHR(lstat_of(dest / "gone").st_mode));
    CHECK(S_ISCHR(lstat_of(dest / "gone_dir").st_mode));
    CHECK(stats.whiteouts == 2);
    // "redo" was a directory in the parent cache when a file replaced it; the new directory of
    // that name gets the later entries, the old contents are gone.
    CHECK(S_ISDIR(lstat_of(dest / "redo").st_mode));
    CHECK(mode_of(dest / "redo") == 0711);
    CHECK(fs::exists(dest / "redo/new"));
    CHECK_FALSE(fs::exists(dest / "redo/old"));
    CHECK_FALSE(fs::exists(dest / "redo/old2"));
    CHECK(fs::exists(dest / "other/o"));
    // A directory named twice keeps its contents and takes the later mode and mtime.
    CHECK(mode_of(dest / "same") == 0500);
    CHECK(lstat_of(dest / "same").st_mtim.tv_sec == 7);
    CHECK(fs::exists(dest / "same/a"));
    CHECK(fs::exists(dest / "same/b"));
}

TEST_CASE("file data: large, empty and sparse files come out byte for byte", "[layer_extract]") {
    TempDir w;
    make_tars(w.path, R"PY(
import random
rnd = random.Random(7)
big = bytes(rnd.getrandbits(8) for _ in range(3 * 1024 * 1024 + 12345))
mib = bytes(rnd.getrandbits(8) for _ in range(1024 * 1024))
small = [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 70000))) for _ in range(60)]
write("data.tar", [f("big", big), f("mib", mib), f("empty", b"")] +
      [f("small%02d" % i, s) for i, s in enumerate(small)])
open("big", "wb").write(big); open("mib", "wb").write(mib)
for i, s in enumerate(small): open("small%02d" % i, "wb").write(s)
# Sparse files (GNU tar's PAX 1.0 sparse format): a hole at the end, and one at the start.
with open("hole_end", "wb") as fh: fh.write(b"head"); fh.truncate(5 * 1024 * 1024)
with open("hole_start", "wb") as fh: fh.seek(3 * 1024 * 1024); fh.write(b"tail")
os.system("tar --sparse --format=posix -cf sparse.tar hole_end hole_start")
)PY");
    fs::path dest = w.path / "dest";
    fs::create_directory(dest);
    auto stats = extract(w.path / "data.tar", mt::Compression::None, dest, ExtractOptions::Owners::Ignore);
    CHECK(stats.files == 63);
    for (const char* name : {"big", "mib"}) {
        INFO(name);
        CHECK(aishell::read_file(dest / name) == aishell::read_file(w.path / name));
    }
    CHECK(fs::file_size(dest / "empty") == 0);
    for (int i = 0; i < 60; ++i) {
        std::string name = (i < 10 ? "small0" : "small") + std::to_string(i);
        INFO(name);
        CHECK(aishell::read_file(dest / name) == aishell::read_file(w.path / name));
    }

    fs::path sparse = w.path / "sparse";
    fs::create_directory(sparse);
    REQUIRE(fs::file_size(w.path / "sparse.tar") < 1024 * 1024);  // really stored sparse
    extract(w.path / "sparse.tar", mt::Compression::None, sparse, ExtractOptions::Owners::Ignore);
    CHECK(fs::file_size(sparse / "hole_end") == 5 * 1024 * 1024);
    CHECK(aishell::read_file(sparse / "hole_end") == aishell::read_file(w.path / "hole_end"));
    CHECK(fs::file_size(sparse / "hole_start") == 3 * 1024 * 1024 + 4);
    CHECK(aishell::read_file(sparse / "hole_start") == aishell::read_file(w.path / "hole_start"));
}

TEST_CASE("gzip layers: concatenated members, bad checksums, trailing bytes, a plain tar", "[layer_extract]") {
    TempDir w;
    make_tars(w.path, R"PY(
write("layer.tar", [d("etc"), f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")] +
      [f("f%03d" % i, os.urandom(i * 37)) for i in range(200)])
raw = open("layer.tar", "rb").read()
half = len(raw) // 2
open("members.tar.gz", "wb").write(gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + gzip.compress(b""))
one = bytearray(gzip.compress(raw))
open("trailing.tar.gz", "wb").write(bytes(one) + b"garbage after the last member" * 4)
bad_crc = bytearray(one); bad_crc[-8] ^= 0xff
open("badcrc.tar.gz", "wb").write(bytes(bad_crc))
bad_len = bytearray(one); bad_len[-1] ^= 0x01
open("badlen.tar.gz", "wb").write(bytes(bad_len))
open("empty.gz", "wb").write(b"")
)PY");
    const fs::path tar = w.path / "layer.tar";
    const auto diff_id = aishell::oci::sha256_of(aishell::read_file(tar));
    auto fresh = [&](const std::string& name) {
        fs::path p = w.path / name;
        fs::create_directory(p);
        return p;
    };

    SECTION("concatenated members are one stream") {
        fs::path dest = fresh("members");
        auto stats = extract(w.path / "members.tar.gz", mt::Compression::Gzip, dest, ExtractOptions::Owners::Ignore);
        CHECK(stats.diff_id == diff_id);
        CHECK(stats.uncompressed_bytes == fs::file_size(tar));
        CHECK(stats.files == 201);
        CHECK(aishell::read_file(dest / "etc/passwd") == "root:x:0:0::/root:/bin/sh\n");
    }
    SECTION("a plain tar labelled gzip is read as what it is") {
        auto stats = extract(tar, mt::Compression::Gzip, fresh("plain"), ExtractOptions::Owners::Ignore);
        CHECK(stats.diff_id == diff_id);
    }
    SECTION("an empty stream is an empty layer") {
        auto stats = extract(w.path / "empty.gz", mt::Compression::Gzip, fresh("empty"), ExtractOptions::Owners::Ignore);
        CHECK(stats.uncompressed_bytes == 0);
        CHECK(stats.diff_id == aishell::oci::sha256_of(""));
    }
    for (auto [file, message] : {std::pair{"badcrc.tar.gz", "gzip checksum or length mismatch"},
                                 {"badlen.tar.gz", "gzip checksum or length mismatch"},
                                 {"trailing.tar.gz", "not gzip data (bad header)"}}) {
        DYNAMIC_SECTION(file << " is an error") {
            try {
                extract(w.path / file, mt::Compression::Gzip, fresh("bad"), ExtractOptions::Owners::Ignore);
                FAIL("no error");
            } catch (const aishell::Error& e) {
                CHECK_THAT(e.message(), Catch::Contains(message));
            }
        }
    }
}

namespace {

// The inode flags of path (FS_IOC_GETFLAGS), or nullopt where the filesystem has none.
std::optional<int> inode_flags(const fs::path& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(fd);
    int flags = 0;
    if (::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags) != 0) return std::nullopt;
    return flags;
}

}  // namespace

TEST_CASE("unpacking marks the store's tmp dir as a top of directory hierarchies, not the layer",
          "[layer_extract]") {
    TempDir w;
    // Where the filesystem takes the hint (ext2/3/4): probed on a dir of our own.
    fs::create_directory(w.path / "probe");
    auto probe = inode_flags(w.path / "probe");
    bool supported = false;
    if (probe) {
        UniqueFd fd(::open((w.path / "probe").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        int flags = *probe | FS_TOPDIR_FL;
        supported = ::ioctl(fd.get(), FS_IOC_SETFLAGS, &flags) == 0;
    }
    if (!supported) aishell::test::skip_test("the filesystem of " + w.path.string() + " has no FS_TOPDIR_FL");
    make_tars(w.path, R"PY(write("layer.tar", [d("usr"), d("usr/bin"), f("usr/bin/x")]))PY");
    auto store = aishell::oci::Store::open(w.path / "store");
    UniqueFd in(::open((w.path / "layer.tar").c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(in);
    auto diff_id = aishell::oci::sha256_of(aishell::read_file(w.path / "layer.tar"));
    auto r = aishell::oci::unpack_layer_stream(store, in.get(), mt::Compression::None, diff_id);
    REQUIRE(r.unpacked);
    CHECK((*inode_flags(store.tmp_dir()) & FS_TOPDIR_FL) != 0);
    CHECK((*inode_flags(r.path) & FS_TOPDIR_FL) == 0);
    CHECK((*inode_flags(r.path / "usr") & FS_TOPDIR_FL) == 0);
    CHECK(aishell::read_file(r.path / "usr/bin/x") == "x");
}
