// The one path resolver (common/resolve_path.hpp): each mode gives the same answers through
// openat2, through its userspace walk called directly, and with openat2 made to fail with
// ENOSYS by a seccomp filter in a forked child (what a kernel before 5.6 or a container host's
// profile does), which is how open_resolved reaches the walk in production.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "common/resolve_path.hpp"
#include "common/unique_fd.hpp"

#include "child_process.hpp"
#include "temp_dir.hpp"

using namespace aishell;
namespace fs = std::filesystem;

namespace {

// root/: dir/file ("in"), file, abs -> /dir, rel -> ../../dir, escape -> ../../../../etc,
// loop -> loop; and next to root, outside: secret.
struct Tree {
    TempDir tmp;
    fs::path root = tmp.path / "root";
    UniqueFd root_fd;

    Tree() {
        fs::create_directories(root / "dir");
        std::ofstream(root / "dir" / "file") << "in";
        std::ofstream(root / "file") << "top";
        std::ofstream(tmp.path / "secret") << "out";
        fs::create_symlink("/dir", root / "abs");
        fs::create_symlink("../../dir", root / "rel");
        fs::create_symlink("../../../../", root / "escape");
        fs::create_symlink("loop", root / "loop");
        root_fd = UniqueFd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    }
};

using Opener = std::function<int(int, const char*, int, Resolve)>;

// "content" of a file opened, "dir" / "link" for what an O_PATH fd names, or the errno name.
std::string open_result(const Opener& open, int root, const char* path, int flags, Resolve mode) {
    errno = 0;
    UniqueFd fd(open(root, path, flags, mode));
    if (!fd) return std::string("errno ") + strerrorname_np(errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return "fstat failed";
    if (S_ISLNK(st.st_mode)) return "link";
    if (S_ISDIR(st.st_mode)) return "dir";
    if (flags & O_PATH) return "file";
    char buf[16];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    return n < 0 ? "read failed" : std::string(buf, static_cast<std::size_t>(n));
}

struct Case {
    const char* path;
    int flags;
    Resolve mode;
    const char* expect;
};

const Case kCases[] = {
    // In root: symlinks and ".." resolve as in a chroot at root.
    {"dir/file", O_RDONLY, Resolve::InRoot, "in"},
    {"/dir/file", O_RDONLY, Resolve::InRoot, "in"},
    {"abs/file", O_RDONLY, Resolve::InRoot, "in"},
    {"rel/file", O_RDONLY, Resolve::InRoot, "in"},
    {"../../file", O_RDONLY, Resolve::InRoot, "top"},
    {"escape/file", O_RDONLY, Resolve::InRoot, "top"},
    {"escape/secret", O_RDONLY, Resolve::InRoot, "errno ENOENT"},
    {"dir/../../secret", O_RDONLY, Resolve::InRoot, "errno ENOENT"},
    {"abs", O_PATH, Resolve::InRoot, "dir"},
    {"abs", O_PATH | O_NOFOLLOW, Resolve::InRoot, "link"},
    {"abs", O_RDONLY | O_NOFOLLOW, Resolve::InRoot, "errno ELOOP"},
    {"loop/x", O_RDONLY, Resolve::InRoot, "errno ELOOP"},
    {"file/x", O_RDONLY, Resolve::InRoot, "errno ENOTDIR"},
    {"file", O_RDONLY | O_DIRECTORY, Resolve::InRoot, "errno ENOTDIR"},
    {"", O_PATH, Resolve::InRoot, "dir"},
    {"missing/x", O_PATH, Resolve::InRoot, "errno ENOENT"},
    // Beneath, no symlinks: any symlink or a way up is refused.
    {"dir/file", O_RDONLY, Resolve::BeneathNoSymlinks, "in"},
    {"dir", O_PATH | O_DIRECTORY, Resolve::BeneathNoSymlinks, "dir"},
    {"abs/file", O_RDONLY, Resolve::BeneathNoSymlinks, "errno ELOOP"},
    {"escape/secret", O_RDONLY, Resolve::BeneathNoSymlinks, "errno ELOOP"},
    {"abs", O_RDONLY, Resolve::BeneathNoSymlinks, "errno ELOOP"},
    {"abs", O_PATH | O_NOFOLLOW, Resolve::BeneathNoSymlinks, "link"},
    {"../secret", O_RDONLY, Resolve::BeneathNoSymlinks, "errno EXDEV"},
    {"/dir/file", O_RDONLY, Resolve::BeneathNoSymlinks, "errno EXDEV"},
};

// Every case through open, as "path: result" lines that differ from the expectation.
std::string mismatches(const Tree& t, const Opener& open) {
    std::string out;
    for (const auto& c : kCases) {
        std::string got = open_result(open, t.root_fd.get(), c.path, c.flags, c.mode);
        if (got != c.expect)
            out += std::string(c.mode == Resolve::InRoot ? "in root " : "beneath ") + c.path + " flags " +
                   std::to_string(c.flags) + ": got " + got + ", expected " + c.expect + "\n";
    }
    return out;
}

const Opener kOpenResolved = [](int d, const char* p, int f, Resolve m) { return open_resolved(d, p, f, m); };
const Opener kWalk = [](int d, const char* p, int f, Resolve m) { return open_resolved_walk(d, p, f, m); };

std::string resolved_path(int root, const char* path) {
    char out[PATH_MAX];
    if (!resolve_in_root_path(root, path, out, sizeof out)) return std::string("errno ") + strerrorname_np(errno);
    return out;
}

}  // namespace

TEST_CASE("resolver: openat2 and the walk agree on every case", "[resolve_path]") {
    Tree t;
    REQUIRE(t.root_fd);
    CHECK(mismatches(t, kOpenResolved) == "");
    CHECK(mismatches(t, kWalk) == "");
}

TEST_CASE("resolver: without openat2 (ENOSYS from seccomp) open_resolved falls back to the walk", "[resolve_path]") {
    Tree t;
    REQUIRE(t.root_fd);
    CHECK(test::output_without_openat2([&] {
              // The filter works: openat2 itself now fails with ENOSYS.
              if (::syscall(SYS_openat2, AT_FDCWD, ".", nullptr, 0) != -1 || errno != ENOSYS) return std::string("openat2 not blocked\n");
              return mismatches(t, kOpenResolved);
          }) == "");
}

TEST_CASE("resolver: the path a name resolves to in root keeps missing components", "[resolve_path]") {
    Tree t;
    REQUIRE(t.root_fd);
    CHECK(resolved_path(t.root_fd.get(), "abs/new/x") == "dir/new/x");
    CHECK(resolved_path(t.root_fd.get(), "/rel") == "dir");
    CHECK(resolved_path(t.root_fd.get(), "escape/etc/x") == "etc/x");
    CHECK(resolved_path(t.root_fd.get(), "missing/../dir/file") == "dir/file");
    CHECK(resolved_path(t.root_fd.get(), "missing/../../..") == "");
    CHECK(resolved_path(t.root_fd.get(), "file/below") == "file/below");
    CHECK(resolved_path(t.root_fd.get(), "loop") == "errno ELOOP");
}
