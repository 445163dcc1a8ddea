// Layer extraction (oci/layer_extract) of an arbitrary archive into a temp dir. The first byte
// picks the compression (none, gzip, zstd); the rest is the layer as a registry would serve it.
//
// Privileges: extraction runs as aishell's single mode runs it, as root of a user namespace that
// maps only the caller, so nothing the archive asks for (owners, setuid bits, device nodes,
// security.capability) is worth more than the caller's own rights on the host. The namespace is
// entered once, before libFuzzer starts (unshare needs a single-threaded process), not per input
// (a fork per input would cost more than most extractions and hide state between them). Host
// root is refused: mapped to itself, container root would keep root's access to every root-owned
// file, and a namespace mapped to another user could not write libFuzzer's own artifacts;
// scripts/fuzz runs this target as an unprivileged user.
//
// Containment check: each input is extracted into WORK/d beside a canary file WORK/canary; after
// it, WORK must hold exactly those two entries and the canary must be unchanged, else abort()
// (an entry written through "../canary" or a planted symlink escaped the destination).
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "oci/layer_extract.hpp"

namespace {

using aishell::UniqueFd;
namespace mt = aishell::oci::media_type;

constexpr const char* kCanary = "canary";
constexpr const char* kCanaryText = "canary\n";
constexpr const char* kDest = "d";

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "fuzz_layer_extract: %s\n", message.c_str());
    std::exit(1);
}

bool write_all(const char* path, const std::string& text) {
    UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
    return fd && ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

// True in the initial user namespace, whose uid_map is the identity over all 2^32-1 ids.
bool in_initial_user_namespace() {
    std::string map = aishell::read_file("/proc/self/uid_map");
    return map.find("4294967295") != std::string::npos;
}

// Becomes root of a new user namespace holding only the caller's uid and gid (user_namespaces(7):
// an unprivileged process must deny setgroups before writing gid_map).
void enter_user_namespace() {
    uid_t uid = ::geteuid();
    gid_t gid = ::getegid();
    if (::unshare(CLONE_NEWUSER) != 0) die("unshare(CLONE_NEWUSER) failed: user namespaces are needed");
    if (!write_all("/proc/self/setgroups", "deny") ||
        !write_all("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
        !write_all("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1"))
        die("cannot write the user namespace's id maps");
}

struct Work {
    std::string path;
    UniqueFd fd;
    struct stat canary {};

    Work() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "aishell-fuzz-layer-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) die("mkdtemp failed");
        path = tmpl;
        fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        UniqueFd c(::openat(fd.get(), kCanary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640));
        if (!fd || !c || ::write(c.get(), kCanaryText, 7) != 7 || ::fstat(c.get(), &canary) != 0)
            die("cannot set up " + path);
    }
    ~Work() {
        try {
            UniqueFd parent(::open(std::filesystem::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            aishell::oci::remove_tree_at(parent.get(), std::filesystem::path(path).filename());
        } catch (...) {
        }
    }

    std::set<std::string> entries() const {
        std::set<std::string> names;
        UniqueFd dup(::openat(fd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        DIR* dir = dup ? ::fdopendir(dup.release()) : nullptr;
        if (dir == nullptr) die("cannot list " + path);
        while (const dirent* e = ::readdir(dir))
            if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..") names.insert(e->d_name);
        ::closedir(dir);
        return names;
    }

    void check_contained() const {
        struct stat st {};
        if (::fstatat(fd.get(), kCanary, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_ino != canary.st_ino ||
            st.st_mode != canary.st_mode || st.st_size != canary.st_size || st.st_nlink != canary.st_nlink ||
            st.st_mtim.tv_sec != canary.st_mtim.tv_sec || st.st_mtim.tv_nsec != canary.st_mtim.tv_nsec) {
            std::fprintf(stderr, "fuzz_layer_extract: the canary beside the destination changed\n");
            std::abort();
        }
        if (entries() != std::set<std::string>{kCanary, kDest}) {
            std::fprintf(stderr, "fuzz_layer_extract: an entry appeared beside the destination\n");
            std::abort();
        }
    }
};

Work& work() {
    static Work w;
    return w;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (in_initial_user_namespace()) {
        if (::geteuid() == 0) die("refusing to extract layers as host root; run as an unprivileged user (scripts/fuzz does)");
        enter_user_namespace();
    }
    (void)work();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    static const mt::Compression kinds[] = {mt::Compression::None, mt::Compression::Gzip, mt::Compression::Zstd};
    mt::Compression compression = kinds[data[0] % 3];

    UniqueFd layer(::memfd_create("layer", MFD_CLOEXEC));
    if (!layer || ::write(layer.get(), data + 1, size - 1) != static_cast<ssize_t>(size - 1) ||
        ::lseek(layer.get(), 0, SEEK_SET) != 0)
        die("cannot fill a memfd");

    Work& w = work();
    if (::mkdirat(w.fd.get(), kDest, 0700) != 0) die("mkdir " + w.path + "/" + kDest);
    {
        UniqueFd dest(::openat(w.fd.get(), kDest, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dest) die("open " + w.path + "/" + kDest);
        aishell::oci::ExtractOptions options;
        options.owners = aishell::oci::ExtractOptions::Owners::PreserveMapped;
        options.force_walk = (data[0] / 3) % 2 == 1;  // the O_NOFOLLOW walk as well as openat2
        try {
            (void)aishell::oci::extract_layer(layer.get(), compression, dest.get(), options);
        } catch (const aishell::Error&) {
        }
    }
    w.check_contained();
    aishell::oci::remove_tree_at(w.fd.get(), kDest);
    return 0;
}
