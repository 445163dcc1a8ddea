// The root emulation filter (runtime/fakeroot.hpp), loaded for real: each test forks a child
// that sets no_new_privs (so that an unprivileged test run may load filters), loads the
// filters, makes the calls and reports what it saw through a pipe; the parent checks it.
#include <fcntl.h>
#include <grp.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "common/error.hpp"

#include "oci/owner_table.hpp"
#include "runtime/capabilities.hpp"
#include "runtime/container.hpp"
#include "runtime/mounts.hpp"
#include "runtime/fakeroot.hpp"
#include "runtime/seccomp.hpp"
#include "child_process.hpp"
#include "temp_dir.hpp"

using namespace aishell::runtime;
namespace fs = std::filesystem;

namespace {

bool load(const std::vector<sock_filter>& prog) {
    sock_fprog p{static_cast<unsigned short>(prog.size()), const_cast<sock_filter*>(prog.data())};
    return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p) == 0;
}

// Runs body in a forked child after loading filters (in order); returns what body returned, or
// a description of how the child failed. body reports problems as text ("" = all well).
std::string in_child(const std::vector<std::vector<sock_filter>>& filters, const std::function<std::string()>& body) {
    int status = 0;
    std::string got = aishell::test::output_of_child(
        [&]() -> std::string {
            if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return "no_new_privs failed";
            for (const auto& f : filters)
                if (!load(f)) return std::string("seccomp load failed: ") + std::strerror(errno);
            return body();
        },
        status);
    REQUIRE(status != -1);
    if (!WIFEXITED(status)) return "child died with signal " + std::to_string(WTERMSIG(status));
    return got;
}

std::string expect(bool ok, const std::string& what) { return ok ? "" : what + " (errno " + std::strerror(errno) + "); "; }

struct Owner {
    uid_t uid;
    gid_t gid;
};
Owner owner_of(const fs::path& p) {
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return {st.st_uid, st.st_gid};
}

// "Uid:" or "Gid:" line of /proc/self/status: real, effective, saved, fs.
std::string status_line(const char* key) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key, 0) == 0) return line;
    return "";
}

std::vector<sock_filter> default_profile_program() {
    return compile_seccomp(default_seccomp_profile(), host_seccomp_context(default_capabilities()));
}

}  // namespace

TEST_CASE("under root emulation the chown family returns 0 and changes no owner", "[fakeroot]") {
    TempDir dir;
    const fs::path file = dir.path / "f", link = dir.path / "l";
    std::ofstream(file) << "x";
    fs::create_symlink("f", link);
    const Owner before = owner_of(file), link_before = owner_of(link);
    const uid_t other = before.uid + 4242;
    auto result = in_child({compile_root_emulation()}, [&] {
        std::string r;
        r += expect(::chown(file.c_str(), other, other) == 0, "chown");
        r += expect(::lchown(link.c_str(), other, other) == 0, "lchown");
        r += expect(::fchownat(AT_FDCWD, file.c_str(), other, other, 0) == 0, "fchownat");
        r += expect(::fchownat(AT_FDCWD, link.c_str(), other, other, AT_SYMLINK_NOFOLLOW) == 0, "fchownat nofollow");
        int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        r += expect(fd >= 0 && ::fchown(fd, other, other) == 0, "fchown");
        if (fd >= 0) ::close(fd);
        r += expect(::syscall(SYS_chown, file.c_str(), other, other) == 0, "raw chown syscall");
        return r;
    });
    CHECK(result == "");
    CHECK(owner_of(file).uid == before.uid);
    CHECK(owner_of(file).gid == before.gid);
    CHECK(owner_of(link).uid == link_before.uid);
    CHECK(owner_of(link).gid == link_before.gid);
}

TEST_CASE("under root emulation set*id and setgroups return 0 and change no id", "[fakeroot]") {
    auto result = in_child({compile_root_emulation()}, [] {
        const std::string uid_line = status_line("Uid:"), gid_line = status_line("Gid:");
        const int ngroups = ::getgroups(0, nullptr);
        const uid_t u = ::getuid() + 4242;
        const gid_t g = ::getgid() + 4242;
        std::string r;
        gid_t list[1] = {g};
        r += expect(::setgroups(1, list) == 0, "setgroups");
        r += expect(::setgid(g) == 0, "setgid");
        r += expect(::setregid(g, g) == 0, "setregid");
        r += expect(::setresgid(g, g, g) == 0, "setresgid");
        r += expect(::setuid(u) == 0, "setuid");
        r += expect(::setreuid(u, u) == 0, "setreuid");
        r += expect(::setresuid(u, u, u) == 0, "setresuid");
        // setfsuid returns the previous fsuid; faked, it returns 0 (what it would be as root).
        r += expect(::syscall(SYS_setfsuid, u) == 0, "setfsuid");
        r += expect(::syscall(SYS_setfsgid, g) == 0, "setfsgid");
        if (status_line("Uid:") != uid_line) r += "uids changed: " + status_line("Uid:") + "; ";
        if (status_line("Gid:") != gid_line) r += "gids changed: " + status_line("Gid:") + "; ";
        if (::getgroups(0, nullptr) != ngroups) r += "groups changed; ";
        return r;
    });
    CHECK(result == "");
}

TEST_CASE("under root emulation device nodes are faked and other nodes are made", "[fakeroot]") {
    TempDir dir;
    const fs::path chr = dir.path / "null", blk = dir.path / "sda", fifo = dir.path / "fifo", reg = dir.path / "reg";
    auto result = in_child({compile_root_emulation()}, [&] {
        std::string r;
        r += expect(::mknod(chr.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0, "mknod chr");
        r += expect(::mknodat(AT_FDCWD, blk.c_str(), S_IFBLK | 0660, makedev(8, 0)) == 0, "mknodat blk");
        r += expect(::mknod(fifo.c_str(), S_IFIFO | 0600, 0) == 0, "mknod fifo");
        r += expect(::mknodat(AT_FDCWD, reg.c_str(), S_IFREG | 0600, 0) == 0, "mknodat regular");
        return r;
    });
    CHECK(result == "");
    CHECK_FALSE(fs::exists(fs::symlink_status(chr)));
    CHECK_FALSE(fs::exists(fs::symlink_status(blk)));
    CHECK(fs::is_fifo(fs::symlink_status(fifo)));
    CHECK(fs::is_regular_file(fs::symlink_status(reg)));
}

TEST_CASE("root emulation stacked under the default profile keeps the profile's denials", "[fakeroot]") {
    TempDir dir;
    const fs::path file = dir.path / "f";
    std::ofstream(file) << "x";
    const Owner before = owner_of(file);
    // As the runtime loads them: emulation first, then the profile.
    auto result = in_child({compile_root_emulation(), default_profile_program()}, [&] {
        std::string r;
        r += expect(::chown(file.c_str(), before.uid + 1, before.gid + 1) == 0, "chown");
        r += expect(::setgroups(0, nullptr) == 0, "setgroups");
        errno = 0;
        if (::syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -1, 0) != -1 || errno != EPERM)
            r += std::string("keyctl: want EPERM, got ") + std::strerror(errno) + "; ";
        errno = 0;
        if (::syscall(SYS_add_key, "user", "k", "v", 1, -1) != -1 || errno != EPERM)
            r += std::string("add_key: want EPERM, got ") + std::strerror(errno) + "; ";
        return r;
    });
    CHECK(result == "");
    CHECK(owner_of(file).uid == before.uid);
}

TEST_CASE("a profile that denies chown wins over the emulation loaded before it", "[fakeroot]") {
    // Between two ERRNO verdicts the most recently loaded filter wins (kernel/seccomp.c): this is
    // why the runtime loads the emulation first. Loaded the other way round, it would win.
    const std::string deny_chown = R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["chown", "fchown", "lchown", "fchownat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})";
    const auto profile = compile_seccomp(parse_seccomp_profile(deny_chown), host_seccomp_context(default_capabilities()));
    TempDir dir;
    const fs::path file = dir.path / "f";
    std::ofstream(file) << "x";
    const Owner before = owner_of(file);
    auto chown_errno = [&] {
        errno = 0;
        int rc = ::chown(file.c_str(), before.uid, before.gid);
        return std::to_string(rc == 0 ? 0 : errno);
    };
    CHECK(in_child({compile_root_emulation(), profile}, chown_errno) == std::to_string(EACCES));
    CHECK(in_child({profile, compile_root_emulation()}, chown_errno) == "0");
}

#if defined(__x86_64__)
TEST_CASE("under root emulation the i386 chown32 and setuid32 of a 32-bit caller return 0", "[fakeroot]") {
    // int $0x80 enters the kernel as an i386 syscall (AUDIT_ARCH_I386) with 32-bit arguments,
    // so the path must live below 4 GiB. A kernel without IA32 emulation (CONFIG_IA32_EMULATION
    // off, or ia32_emulation=0 on the command line since 6.7) kills the caller with SIGSEGV on
    // int $0x80: there no 32-bit syscall can be made at all, so there is no i386 path to
    // emulate. That is probed in a child, never assumed, and said as a warning.
    TempDir dir;
    const fs::path file = dir.path / "f";
    std::ofstream(file) << "x";
    const Owner before = owner_of(file);
    void* low = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    REQUIRE(low != MAP_FAILED);
    std::strncpy(static_cast<char*>(low), file.c_str(), 4095);
    auto int80 = [](long nr, long a, long b, long c) {
        long ret;
        asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
        return ret;
    };
    constexpr long kChown32 = 212, kSetuid32 = 213, kGetuid32 = 199;
    // Unfiltered, getuid32 works when the kernel runs i386 syscalls at all.
    int probe_status = 0;
    const std::string probe = aishell::test::output_of_child([&] {
        // The kernel's SIGSEGV must kill the probe (ASan's own handler would report and exit 1).
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(SIGSEGV, &dfl, nullptr);
        return int80(kGetuid32, 0, 0, 0) == static_cast<long>(::getuid()) ? std::string("ok") : std::string("wrong uid");
    }, probe_status);
    if (WIFSIGNALED(probe_status) && WTERMSIG(probe_status) == SIGSEGV) {
        ::munmap(low, 4096);
        WARN("this kernel runs no i386 syscalls (int $0x80 is SIGSEGV): the 32-bit path does not exist here");
        return;
    }
    REQUIRE(probe == "ok");
    auto result = in_child({compile_root_emulation()}, [&] {
        std::string r;
        const long uid = int80(kGetuid32, 0, 0, 0);
        long rc = int80(kChown32, reinterpret_cast<long>(low), before.uid + 4242, before.gid + 4242);
        if (rc != 0) r += "chown32 returned " + std::to_string(rc) + "; ";
        rc = int80(kSetuid32, uid + 4242, 0, 0);
        if (rc != 0) r += "setuid32 returned " + std::to_string(rc) + "; ";
        if (int80(kGetuid32, 0, 0, 0) != uid) r += "uid changed; ";
        return r;
    });
    ::munmap(low, 4096);
    CHECK(result == "");
    CHECK(owner_of(file).uid == before.uid);
}
#endif

TEST_CASE("the root emulation list covers the chown and set*id families", "[fakeroot]") {
    const auto& names = root_emulation_syscalls();
    for (const char* n : {"chown", "fchown", "lchown", "fchownat", "setuid", "setgid", "setreuid", "setregid",
                          "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups", "chown32", "setgroups32"})
        CHECK(std::find(names.begin(), names.end(), n) != names.end());
    // capset stays real: the runtime's own capset must drop the capabilities.
    CHECK(std::find(names.begin(), names.end(), "capset") == names.end());
}

// ---- the chown supervisor, end to end in a single-mode container -------------------------------

namespace {

// A one-layer image with a static busybox, an existing file and /home, run with root emulation
// in single mode (the caller mapped to 0 only); returns the run's exit status.
int run_emulated(const fs::path& base, const std::string& script,
                 std::optional<EmulatedIdentity> identity = std::nullopt) {
    const fs::path layer = base / "layers" / "L";
    fs::create_directories(layer / "bin");
    fs::create_directories(layer / "etc");
    fs::create_directories(layer / "home");
    fs::create_directories(base / "run");
    fs::copy_file("/bin/busybox", layer / "bin" / "busybox", fs::copy_options::overwrite_existing);
    fs::permissions(layer / "bin" / "busybox", fs::perms(0755));
    std::ofstream(layer / "etc" / "existing") << "from a lower layer\n";

    ContainerSpec spec;
    spec.mapping.mode = UsernsMode::Single;
    spec.mapping.uids = {{0, ::getuid(), 1}};
    spec.mapping.gids = {{0, ::getgid(), 1}};
    spec.layers_dir = base / "layers";
    spec.layers = {"L"};
    spec.run_dir = base / "run";
    MountPlanInput mi;
    spec.mounts = plan_mounts(mi);
    spec.hostname = "fakeroot-test";
    spec.process.argv = {"/bin/busybox", "sh", "-c", script};
    spec.process.env = {"PATH=/bin"};
    spec.process.path_dirs = {"/bin"};
    spec.capabilities = default_capabilities();
    spec.seccomp = default_profile_program();
    spec.emulate_root_ids = true;
    spec.emulated_identity = std::move(identity);
    return run_container(spec).status;
}

}  // namespace

TEST_CASE("with root emulation, chown calls are answered and their owners recorded", "[fakeroot]") {
    TempDir dir;
    const std::string script =
        "mkdir /home/dev && chown 1000:1001 /home/dev && ln -s dev /home/l && chown -h 5:6 /home/l"
        " && chown 7:8 /etc/existing && ! chown 1 /missing 2>/dev/null && cd /home && chown 9:10 dev"
        " && chown 0:0 /bin/busybox && touch /home/mine && chown 0:0 /home/mine"
        " && chown 1000:1000 /dev/null && echo ok > /home/done";
    REQUIRE(run_emulated(dir.path, script) == 0);
    const fs::path upper = dir.path / "run" / "upper";
    REQUIRE(fs::exists(upper / "home" / "done"));  // the whole script ran

    auto table = aishell::oci::read_owner_table(dir.path / "run" / kOwnerTableName);
    REQUIRE(table);
    auto owner = [&](const std::string& p) -> std::pair<std::uint32_t, std::uint32_t> {
        const auto* r = table->find(p);
        if (!r) return {~0u, ~0u};
        return {r->owner.uid, r->owner.gid};
    };
    using P = std::pair<std::uint32_t, std::uint32_t>;
    CHECK(owner("home/dev") == P{9, 10});         // the last chown wins, relative to the cwd
    CHECK(owner("home/l") == P{5, 6});            // -h: the symlink itself
    CHECK(table->find("home/l")->type == S_IFLNK);
    CHECK(owner("etc/existing") == P{7, 8});      // a lower layer's file, copied up
    CHECK(fs::exists(upper / "etc" / "existing"));
    // Nothing to record: the owner it has already, or not on the root overlay.
    CHECK(table->find("bin/busybox") == nullptr);
    CHECK_FALSE(fs::exists(upper / "bin" / "busybox"));
    CHECK(table->find("home/mine") == nullptr);
    CHECK(table->find("dev/null") == nullptr);
    CHECK(table->size() == 3);
    // The records name the upper dir's entries, and the disk owners did not change.
    struct stat st {};
    REQUIRE(::lstat((upper / "home" / "dev").c_str(), &st) == 0);
    CHECK(table->find("home/dev")->ino == st.st_ino);
    CHECK(st.st_uid == ::getuid());
    REQUIRE(::lstat((upper / "etc" / "existing").c_str(), &st) == 0);
    CHECK(st.st_uid == ::getuid());
}

TEST_CASE("with an emulated identity, the get*id family reports it and the run is still root", "[fakeroot]") {
    TempDir dir;
    // busybox id: getuid, geteuid, getgid, getegid and getgroups (both the count and the list).
    const std::string script =
        "{ id -u; id -g; id -G; id -ru; id -rg; } > /out && touch /root-can-write-here && chown 5:5 /out";
    REQUIRE(run_emulated(dir.path, script, EmulatedIdentity{1000, 1001, {1001, 27, 4000}}) == 0);
    const fs::path upper = dir.path / "run" / "upper";
    std::ifstream in(upper / "out");
    std::stringstream text;
    text << in.rdbuf();
    CHECK(text.str() == "1000\n1001\n1001 27 4000\n1000\n1001\n");  // id -G: the gid, then the others
    CHECK(fs::exists(upper / "root-can-write-here"));  // really container root underneath
    auto table = aishell::oci::read_owner_table(dir.path / "run" / kOwnerTableName);
    REQUIRE(table);  // chown is still answered and recorded alongside
    CHECK(table->find("out")->owner == aishell::oci::LayerOwner{5, 5});
}

TEST_CASE("identity emulation needs the chown supervisor", "[fakeroot]") {
    CHECK_THROWS_AS(compile_root_emulation(ChownEmulation::FakeSuccess, true), aishell::Error);
    auto with = compile_root_emulation(ChownEmulation::Record, true), without = compile_root_emulation(ChownEmulation::Record);
    CHECK(with.size() > without.size());
}
