// runtime/image_fs.hpp: paths looked up in layer trees as overlayfs merges them.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>

#include <catch2/catch.hpp>

#include "runtime/image_fs.hpp"
#include "temp_dir.hpp"

using namespace aishell::runtime;
namespace fs = std::filesystem;

namespace {

void write(const fs::path& p, const std::string& text, mode_t mode = 0644) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    REQUIRE(::chmod(p.c_str(), mode) == 0);
}

void whiteout(const fs::path& p) {
    fs::create_directories(p.parent_path());
    REQUIRE(::mknod(p.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0);
}

std::string found(const TempDir& t, const std::string& path) {
    auto e = lookup_in_image(t.path, {"top", "mid", "low"}, path);
    return e ? e->host_path.lexically_relative(t.path).string() : "-";
}

}  // namespace

TEST_CASE("the topmost layer wins and a whiteout hides the lower layers' entry", "[image_fs]") {
    TempDir t;
    write(t.path / "low/etc/a", "low");
    write(t.path / "mid/etc/a", "mid");
    write(t.path / "low/etc/b", "low");
    whiteout(t.path / "top/etc/b");
    write(t.path / "low/etc/c", "low");
    fs::create_directories(t.path / "top");
    CHECK(found(t, "/etc/a") == "mid/etc/a");
    CHECK(found(t, "/etc/b") == "-");
    CHECK(found(t, "etc//./c") == "low/etc/c");
    CHECK(found(t, "/etc") == "top/etc");  // top/etc holds the whiteout: a real dir, so the topmost
    CHECK(found(t, "/etc/a/x") == "-");  // not a directory
}

TEST_CASE("an opaque dir or a non-dir hides the lower layers' dir", "[image_fs]") {
    TempDir t;
    write(t.path / "low/opt/old", "low");
    write(t.path / "mid/opt/new", "mid");
    REQUIRE(::setxattr((t.path / "mid/opt").c_str(), "user.overlay.opaque", "y", 1, 0) == 0);
    write(t.path / "low/srv/kept", "low");
    write(t.path / "mid/srv", "a file now");
    fs::create_directories(t.path / "top/srv");
    fs::create_directories(t.path / "top/opt");
    CHECK(found(t, "/opt/new") == "mid/opt/new");
    CHECK(found(t, "/opt/old") == "-");
    CHECK(found(t, "/srv/kept") == "-");
}

TEST_CASE("symlinks resolve inside the image, an absolute one from its root, never the host's", "[image_fs]") {
    TempDir t;
    // Debian's merged /usr: /bin -> usr/bin in a lower layer, bash in another.
    fs::create_directories(t.path / "low");
    fs::create_symlink("usr/bin", t.path / "low/bin");
    write(t.path / "mid/usr/bin/bash", "#!", 0755);
    fs::create_directories(t.path / "top/usr/local/bin");
    fs::create_symlink("/usr/bin/bash", t.path / "top/usr/local/bin/sh");
    fs::create_symlink("../../../../../../etc", t.path / "top/escape");
    fs::create_symlink("loop", t.path / "top/loop");
    CHECK(found(t, "/bin/bash") == "mid/usr/bin/bash");
    CHECK(found(t, "/usr/local/bin/sh") == "mid/usr/bin/bash");
    CHECK(found(t, "/escape/passwd") == "-");  // "..": stays at the image's root, which has no etc
    CHECK(found(t, "/loop") == "-");

    const std::vector<std::string> layers{"top", "mid", "low"};
    CHECK(image_has_executable(t.path, layers, {"/usr/local/bin", "/bin"}, "bash"));
    CHECK_FALSE(image_has_executable(t.path, layers, {"/usr/local/bin", "/sbin"}, "bash"));
    write(t.path / "top/usr/sbin/tool", "not executable", 0644);
    CHECK_FALSE(image_has_executable(t.path, layers, {"/usr/sbin"}, "tool"));
    CHECK_FALSE(image_has_executable(t.path, layers, {"usr/bin"}, "bash"));  // relative: ignored
}
