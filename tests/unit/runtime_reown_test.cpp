// Re-owned layer copies for keep-id: the owner shift between two mappings, and the tree copy
// (owners, modes incl. setuid, times, hardlinks, symlinks, whiteouts, fifos, xattrs, caps).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "runtime/idmap.hpp"
#include "runtime/reown.hpp"
#include "temp_dir.hpp"
#include "skip.hpp"

using namespace aishell::runtime;
namespace fs = std::filesystem;

namespace {

struct stat lstat_of(const fs::path& p) {
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return st;
}

void write(const fs::path& p, const std::string& text) {
    std::ofstream(p) << text;
}

void set_mtime(const fs::path& p, time_t sec) {
    timespec t[2] = {{sec, 0}, {sec, 0}};
    REQUIRE(::utimensat(AT_FDCWD, p.c_str(), t, AT_SYMLINK_NOFOLLOW) == 0);
}

OwnerShift plus_ten() {
    OwnerShift s;
    s.uid = [](std::uint32_t u) -> std::optional<std::uint32_t> { return u + 10; };
    s.gid = [](std::uint32_t g) -> std::optional<std::uint32_t> { return g + 20; };
    return s;
}

}  // namespace

TEST_CASE("owner shift for keep-id: each file keeps its container owner under the new mapping", "[runtime][reown]") {
    HostIds h;
    h.uid = 1000;
    h.gid = 1000;
    h.user_name = "dev";
    h.subuid = IdRange{1, 100000, 65536};
    h.subgid = IdRange{1, 100000, 65536};
    h.have_newidmap = true;
    auto store = choose_mapping(h, false);
    auto keep = choose_mapping(h, true);
    auto shift = owner_shift(store, keep);
    // Seen from the store's namespace: container 0 under keep-id is host 100000 = store's 1.
    CHECK(shift.uid(0) == 1u);
    CHECK(shift.uid(999) == 1000u);
    CHECK(shift.uid(1000) == 0u);  // the caller itself: store's root
    CHECK(shift.uid(1001) == 1001u);
    CHECK(shift.uid(65536) == 65536u);
    CHECK_FALSE(shift.uid(65537));  // not mapped under keep-id
    CHECK(shift.gid(5) == 6u);
    // Round trip: from the keep-id view back to the store's.
    auto back = owner_shift(keep, store);
    for (std::uint32_t u : {0u, 1u, 999u, 1000u, 1001u, 65536u}) CHECK(back.uid(*shift.uid(u)) == u);
}

TEST_CASE("a re-owned copy keeps the tree and shifts every owner", "[runtime][reown][root]") {
    aishell::test::require_root();  // chown to arbitrary ids (run the unit tests as root)
    TempDir tmp;
    auto src = tmp.path / "src", dst = tmp.path / "dst";
    fs::create_directories(src / "d");
    write(src / "d" / "f", "payload\n");
    REQUIRE(::chown((src / "d" / "f").c_str(), 0, 0) == 0);
    REQUIRE(::chmod((src / "d" / "f").c_str(), 04755) == 0);
    REQUIRE(::link((src / "d" / "f").c_str(), (src / "d" / "hard").c_str()) == 0);
    REQUIRE(::symlink("/usr/bin/target", (src / "abs").c_str()) == 0);
    REQUIRE(::lchown((src / "abs").c_str(), 7, 8) == 0);
    REQUIRE(::mknod((src / "gone").c_str(), S_IFCHR | 0, makedev(0, 0)) == 0);  // overlay whiteout
    REQUIRE(::mkfifo((src / "fifo").c_str(), 0640) == 0);
    REQUIRE(::setxattr((src / "d").c_str(), "user.overlay.opaque", "y", 1, 0) == 0);
    REQUIRE(::chown((src / "d").c_str(), 5, 6) == 0);
    REQUIRE(::chmod((src / "d").c_str(), 02750) == 0);
    fs::create_directories(src / "locked");
    write(src / "locked" / "secret", "x");
    REQUIRE(::chmod((src / "locked" / "secret").c_str(), 0) == 0);
    REQUIRE(::chmod((src / "locked").c_str(), 0) == 0);
    // A v2 file capability (cap_net_raw), as the extractor writes it as namespace root.
    const unsigned char cap_v2[20] = {0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    write(src / "ping", "elf");
    REQUIRE(::setxattr((src / "ping").c_str(), "security.capability", cap_v2, sizeof cap_v2, 0) == 0);
    set_mtime(src / "d" / "f", 1000000);
    set_mtime(src / "abs", 2000000);
    set_mtime(src / "d", 3000000);

    auto stats = copy_tree_reowned(src, dst, plus_ten());
    CHECK(stats.entries == 9);

    auto f = lstat_of(dst / "d" / "f");
    CHECK(f.st_uid == 10);
    CHECK(f.st_gid == 20);
    CHECK((f.st_mode & 07777) == 04755);  // setuid survives the chown
    CHECK(f.st_mtim.tv_sec == 1000000);
    CHECK(aishell::read_file(dst / "d" / "f") == "payload\n");
    CHECK(lstat_of(dst / "d" / "hard").st_ino == f.st_ino);  // still one inode
    auto d = lstat_of(dst / "d");
    CHECK(d.st_uid == 15);
    CHECK(d.st_gid == 26);
    CHECK((d.st_mode & 07777) == 02750);
    CHECK(d.st_mtim.tv_sec == 3000000);
    char value[8] = {};
    CHECK(::getxattr((dst / "d").c_str(), "user.overlay.opaque", value, sizeof value) == 1);
    CHECK(value[0] == 'y');
    auto abs = lstat_of(dst / "abs");
    CHECK(S_ISLNK(abs.st_mode));
    CHECK(fs::read_symlink(dst / "abs") == "/usr/bin/target");  // absolute links are kept as they are
    CHECK(abs.st_uid == 17);
    CHECK(abs.st_mtim.tv_sec == 2000000);
    auto gone = lstat_of(dst / "gone");
    CHECK(S_ISCHR(gone.st_mode));
    CHECK(gone.st_rdev == makedev(0, 0));
    CHECK(gone.st_uid == 10);
    CHECK(S_ISFIFO(lstat_of(dst / "fifo").st_mode));
    CHECK((lstat_of(dst / "locked").st_mode & 07777) == 0);
    CHECK((lstat_of(dst / "locked" / "secret").st_mode & 07777) == 0);
    // The capability's root id moves with the owners: v3 naming shift(0).
    unsigned char cap[32] = {};
    ssize_t n = ::getxattr((dst / "ping").c_str(), "security.capability", cap, sizeof cap);
    REQUIRE(n == 24);
    CHECK(cap[3] == 0x03);
    CHECK(cap[4] == 0x00);
    CHECK(cap[5] == 0x20);
    CHECK((cap[20] | cap[21] << 8 | cap[22] << 16 | cap[23] << 24) == 10);
}

TEST_CASE("a re-owned copy refuses owners the new mapping cannot show", "[runtime][reown][root]") {
    aishell::test::require_root();
    TempDir tmp;
    auto src = tmp.path / "src";
    fs::create_directories(src);
    write(src / "f", "x");
    REQUIRE(::chown((src / "f").c_str(), 70000, 0) == 0);
    OwnerShift s;
    s.uid = [](std::uint32_t u) -> std::optional<std::uint32_t> {
        if (u >= 65536) return std::nullopt;
        return u;
    };
    s.gid = s.uid;
    CHECK_THROWS_WITH(copy_tree_reowned(src, tmp.path / "dst", s), Catch::Contains("owner 70000 has no place"));
}

TEST_CASE("re-owned trees live beside layers/, one dir per mapping", "[runtime][reown]") {
    HostIds h;
    h.uid = 1000;
    h.gid = 1000;
    h.subuid = IdRange{1, 100000, 65536};
    h.subgid = IdRange{1, 100000, 65536};
    h.have_newidmap = true;
    auto a = reowned_layers_dir("/s", choose_mapping(h, true));
    CHECK(a.parent_path() == "/s");
    CHECK(a.filename().string().rfind("layers-idmap-", 0) == 0);
    h.uid = 1001;
    CHECK(reowned_layers_dir("/s", choose_mapping(h, true)) != a);
}
