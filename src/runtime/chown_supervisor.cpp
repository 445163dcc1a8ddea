// Answers the container's chown-family calls and records the owners they ask for (see
// chown_supervisor.hpp).
#include "runtime/chown_supervisor.hpp"

#include <fcntl.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/resolve_path.hpp"
#include "runtime/fakeroot.hpp"

namespace aishell::runtime {

namespace fs = std::filesystem;

namespace {

UniqueFd open_path(const std::string& path, int flags) {
    return UniqueFd(::open(path.c_str(), flags | O_CLOEXEC));
}

std::optional<std::string> read_link(const std::string& path) {
    char buf[PATH_MAX + 1];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    if (n < 0 || n > PATH_MAX) return std::nullopt;
    return std::string(buf, static_cast<std::size_t>(n));
}

// A NUL-terminated string at addr in the caller's memory (at most PATH_MAX bytes with the NUL).
// nullopt with errno EFAULT or ENAMETOOLONG.
std::optional<std::string> read_string(int mem, std::uint64_t addr) {
    std::string out;
    const long page = ::sysconf(_SC_PAGESIZE);
    while (out.size() < PATH_MAX) {
        // Up to the end of the page: the next one may be unmapped.
        std::size_t want = static_cast<std::size_t>(page - static_cast<long>(addr % static_cast<std::uint64_t>(page)));
        want = std::min<std::size_t>(want, PATH_MAX - out.size());
        char buf[PATH_MAX];
        ssize_t n = ::pread(mem, buf, want, static_cast<off_t>(addr));
        if (n <= 0) {
            errno = EFAULT;
            return std::nullopt;
        }
        if (const void* nul = std::memchr(buf, '\0', static_cast<std::size_t>(n))) {
            out.append(buf, static_cast<std::size_t>(static_cast<const char*>(nul) - buf));
            return out;
        }
        out.append(buf, static_cast<std::size_t>(n));
        addr += static_cast<std::uint64_t>(n);
    }
    errno = ENAMETOOLONG;
    return std::nullopt;
}

// An id argument: 32-bit (the kernel takes the low word), or 16-bit for the old i386/arm calls;
// nullopt for -1, "unchanged".
std::optional<std::uint32_t> id_arg(std::uint64_t v, bool ids16) {
    if (ids16) {
        v &= 0xffff;
        if (v == 0xffff) return std::nullopt;
    }
    auto id = static_cast<std::uint32_t>(v);
    if (id == 0xffffffffu) return std::nullopt;
    return id;
}

}  // namespace

ChownSupervisor::ChownSupervisor(UniqueFd listener, const fs::path& upper_dir, fs::path table, IdMapping mapping,
                                 std::optional<EmulatedIdentity> identity)
    : listener_(std::move(listener)), table_path_(std::move(table)), mapping_(std::move(mapping)), identity_(std::move(identity)) {
    upper_ = open_path(upper_dir.string(), O_PATH | O_DIRECTORY);
    if (!upper_) throw_errno("open", upper_dir.string());
    seccomp_notif_sizes sizes{};
    if (::syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0) throw_errno("seccomp SECCOMP_GET_NOTIF_SIZES");
    notif_buf_.resize(std::max<std::size_t>(sizes.seccomp_notif, sizeof(seccomp_notif)));
    resp_buf_.resize(std::max<std::size_t>(sizes.seccomp_notif_resp, sizeof(seccomp_notif_resp)));

    // The calls by (arch, number) on the architectures the filter covers: x32 numbers come with
    // the x86-64 audit arch and bit 30 set (libseccomp's x32 numbers have it).
    std::vector<std::uint32_t> arches{seccomp_arch_native()};
    if (arches[0] == SCMP_ARCH_X86_64) arches.insert(arches.end(), {SCMP_ARCH_X86, SCMP_ARCH_X32});
    if (arches[0] == SCMP_ARCH_AARCH64) arches.push_back(SCMP_ARCH_ARM);
    const std::pair<const char*, Kind> names[] = {
        {"chown", Kind::Path},        {"chown32", Kind::Path},         {"lchown", Kind::PathNoFollow},
        {"lchown32", Kind::PathNoFollow}, {"fchown", Kind::Fd},        {"fchown32", Kind::Fd},
        {"fchownat", Kind::At},       {"getuid", Kind::GetUid},        {"getuid32", Kind::GetUid},
        {"geteuid", Kind::GetUid},    {"geteuid32", Kind::GetUid},     {"getgid", Kind::GetGid},
        {"getgid32", Kind::GetGid},   {"getegid", Kind::GetGid},       {"getegid32", Kind::GetGid},
        {"getresuid", Kind::GetResUid}, {"getresuid32", Kind::GetResUid}, {"getresgid", Kind::GetResGid},
        {"getresgid32", Kind::GetResGid}, {"getgroups", Kind::GetGroups}, {"getgroups32", Kind::GetGroups},
    };
    for (std::uint32_t arch : arches) {
        const std::uint32_t key_arch = arch == SCMP_ARCH_X32 ? SCMP_ARCH_X86_64 : arch;
        const bool old_32bit = arch == SCMP_ARCH_X86 || arch == SCMP_ARCH_ARM;
        for (const auto& [name, kind] : names) {
            int nr = seccomp_syscall_resolve_name_arch(arch, name);
            if (nr < 0) continue;  // not on this arch
            std::string_view n(name);
            Call c{kind, old_32bit && n != "fchownat" && n.substr(n.size() - 2) != "32"};
            if (kind >= Kind::GetUid && !identity_) continue;  // not trapped without an identity
            calls_.emplace(std::make_pair(key_arch, nr), c);
        }
    }
}

void ChownSupervisor::handle_one() {
    auto* req = reinterpret_cast<seccomp_notif*>(notif_buf_.data());
    std::fill(notif_buf_.begin(), notif_buf_.end(), 0);
    if (::ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_RECV, req) != 0) {
        if (errno == EINTR || errno == ENOENT) return;  // the caller went away meanwhile
        throw_errno("seccomp SECCOMP_IOCTL_NOTIF_RECV");
    }
    const Answer a = answer(*req);
    std::fill(resp_buf_.begin(), resp_buf_.end(), 0);
    auto* resp = reinterpret_cast<seccomp_notif_resp*>(resp_buf_.data());
    resp->id = req->id;
    resp->error = -a.error;
    resp->val = a.error == 0 ? a.value : 0;
    if (::ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_SEND, resp) != 0 && errno != ENOENT)
        throw_errno("seccomp SECCOMP_IOCTL_NOTIF_SEND");
}

ChownSupervisor::Answer ChownSupervisor::answer(const seccomp_notif& req) {
    auto it = calls_.find({req.data.arch, req.data.nr});
    if (it == calls_.end()) return {};
    if (it->second.kind >= Kind::GetUid) return answer_identity(req, it->second);
    return {answer_chown(req, it->second), 0};
}

ChownSupervisor::Answer ChownSupervisor::answer_identity(const seccomp_notif& req, Call call) {
    const EmulatedIdentity& who = *identity_;
    // The old 16-bit calls report an id above 65535 as the overflow id, as the kernel does.
    auto shown = [&](std::uint32_t id) -> std::uint32_t { return call.ids16 && id > 0xffff ? 65534 : id; };
    const auto* a = req.data.args;
    switch (call.kind) {
        case Kind::GetUid: return {0, shown(who.uid)};
        case Kind::GetGid: return {0, shown(who.gid)};
        case Kind::GetGroups: {
            const auto size = static_cast<std::int32_t>(a[0]);  // the kernel reads an int
            if (size == 0) return {0, static_cast<std::int64_t>(who.groups.size())};  // just the count
            if (size < 0 || static_cast<std::size_t>(size) < who.groups.size()) return {EINVAL, 0};
            break;
        }
        default: break;
    }
    // getresuid/getresgid (three pointers) and getgroups (a list): written into its memory.
    std::vector<std::uint32_t> ids;
    std::vector<std::uint64_t> addrs;
    if (call.kind == Kind::GetGroups) {
        for (std::size_t i = 0; i < who.groups.size(); ++i) {
            ids.push_back(shown(who.groups[i]));
            addrs.push_back(a[1] + i * (call.ids16 ? 2 : 4));
        }
    } else {
        const std::uint32_t id = shown(call.kind == Kind::GetResUid ? who.uid : who.gid);
        ids = {id, id, id};
        addrs = {a[0], a[1], a[2]};
    }
    // A failed open is answered with its errno: if the caller is gone nobody reads the answer,
    // and if it is not (EACCES, EMFILE), it must not take uninitialised ids for success.
    UniqueFd mem = open_path("/proc/" + std::to_string(req.pid) + "/mem", O_RDWR);
    if (!mem) return {errno == ENOENT || errno == ESRCH ? EFAULT : errno, 0};
    // The memory opened is the caller's, not a reused pid's, before anything is written to it.
    if (!still_valid(req)) return {};
    for (std::size_t i = 0; i < ids.size(); ++i) {
        const std::uint16_t id16 = static_cast<std::uint16_t>(ids[i]);
        const void* src = call.ids16 ? static_cast<const void*>(&id16) : static_cast<const void*>(&ids[i]);
        const std::size_t n = call.ids16 ? 2 : 4;
        if (::pwrite(mem.get(), src, n, static_cast<off_t>(addrs[i])) != static_cast<ssize_t>(n)) return {EFAULT, 0};
    }
    return {0, call.kind == Kind::GetGroups ? static_cast<std::int64_t>(ids.size()) : 0};
}

bool ChownSupervisor::still_valid(const seccomp_notif& req) const {
    return ::ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) == 0;
}

int ChownSupervisor::open_chown_target(const std::string& proc, const seccomp_notif& req, Call call, int root,
                                       int mem, UniqueFd& target) {
    const auto* a = req.data.args;
    const bool at = call.kind == Kind::At;
    const int dirfd = at ? static_cast<std::int32_t>(a[0]) : AT_FDCWD;
    const int flags = at ? static_cast<int>(a[4]) : 0;
    auto dir_of = [&](int fd) { return fd == AT_FDCWD ? proc + "/cwd" : proc + "/fd/" + std::to_string(fd); };
    if (call.kind == Kind::Fd) {
        target = open_path(dir_of(static_cast<std::int32_t>(a[0])), O_PATH);
        return target ? 0 : EBADF;
    }
    auto path = read_string(mem, at ? a[1] : a[0]);
    if (!path) return errno;
    if (path->empty()) {
        if (!at || !(flags & AT_EMPTY_PATH)) return ENOENT;
        target = open_path(dir_of(dirfd), O_PATH);
        return target ? 0 : EBADF;
    }
    std::string full = *path;
    if (full[0] != '/') {
        auto base = read_link(dir_of(dirfd));
        if (!base) return at ? EBADF : ENOENT;
        if (base->empty() || (*base)[0] != '/') return ENOTDIR;  // a pipe, a socket, ...
        full = *base + "/" + full;
    }
    const bool nofollow = call.kind == Kind::PathNoFollow || (flags & AT_SYMLINK_NOFOLLOW);
    target = open_resolved(root, full, O_PATH | (nofollow ? O_NOFOLLOW : 0), Resolve::InRoot);
    return target ? 0 : errno;
}

int ChownSupervisor::answer_chown(const seccomp_notif& req, Call call) {
    const auto* a = req.data.args;
    const std::string proc = "/proc/" + std::to_string(req.pid);
    const bool at = call.kind == Kind::At;
    const std::size_t id_index = at ? 2 : 1;
    const auto uid = id_arg(a[id_index], call.ids16), gid = id_arg(a[id_index + 1], call.ids16);
    if (at && (static_cast<int>(a[4]) & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)) != 0) return EINVAL;

    UniqueFd root = open_path(proc + "/root", O_PATH | O_DIRECTORY);
    UniqueFd mem = open_path(proc + "/mem", O_RDONLY);
    if (!root || !mem) return 0;  // gone; the answer will not be delivered
    // The pid is the caller's, not a reused one, for what was opened so far.
    if (!still_valid(req)) return 0;
    UniqueFd target;
    if (const int error = open_chown_target(proc, req, call, root.get(), mem.get(), target)) return error;
    if (!uid && !gid) return 0;

    // Only the container's root overlay becomes the layer: binds, /dev, /proc are not recorded.
    struct stat rst {}, tst {};
    if (::fstat(root.get(), &rst) != 0 || ::fstat(target.get(), &tst) != 0 || rst.st_dev != tst.st_dev) return 0;
    // Its path in the container (d_path relative to the container's root mount).
    auto link = read_link("/proc/self/fd/" + std::to_string(target.get()));
    if (!link || link->size() < 2 || (*link)[0] != '/' || link->find(" (deleted)") != std::string::npos) return 0;
    const std::string rel = link->substr(1);
    try {
        oci::check_layer_path(rel);
    } catch (const Error&) {
        return 0;  // not a path a layer can hold (never from d_path, but it is checked, not assumed)
    }
    record_owner(req, target.get(), rel, tst, uid, gid);
    return 0;
}

void ChownSupervisor::record_owner(const seccomp_notif& req, int target, const std::string& rel,
                                   const struct stat& st, std::optional<std::uint32_t> uid,
                                   std::optional<std::uint32_t> gid) {
    // What the layer would record now: our last record if it is still about the same entry (not
    // deleted and made again since), else the owner on disk.
    auto in_upper = upper_identity(rel);
    oci::LayerOwner current{mapping_.uid_inside(st.st_uid).value_or(65534), mapping_.gid_inside(st.st_gid).value_or(65534)};
    if (auto w = wanted_.find(rel); w != wanted_.end() && in_upper && w->second.matches(*in_upper)) current = w->second.owner;
    const oci::LayerOwner want{uid.value_or(current.uid), gid.value_or(current.gid)};
    if (want == current || !still_valid(req)) return;
    if (!in_upper) {
        // Only in a lower layer: copy it up as the real chown would have (ids unchanged).
        if (::fchownat(target, "", static_cast<uid_t>(-1), static_cast<gid_t>(-1), AT_EMPTY_PATH) != 0) return;
        in_upper = upper_identity(rel);
        if (!in_upper) return;
    }
    const auto rec = oci::OwnerRecord::for_entry(want, *in_upper);
    append(oci::format_owner_record(rel, rec));
    wanted_[rel] = rec;
    ++recorded_;
}

// The entry as the upper dir has it: never through a symlink, never outside it.
std::optional<oci::EntryIdentity> ChownSupervisor::upper_identity(const std::string& rel) const {
    const auto slash = rel.rfind('/');
    const std::string parent = slash == std::string::npos ? "." : rel.substr(0, slash);
    UniqueFd dir = open_resolved(upper_.get(), parent, O_PATH, Resolve::BeneathNoSymlinks);
    if (!dir) return std::nullopt;
    return oci::entry_identity_at(dir.get(), slash == std::string::npos ? rel : rel.substr(slash + 1));
}

void ChownSupervisor::append(const std::string& line) {
    if (!table_) {
        table_.reset(::open(table_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!table_) throw_errno("create owner table", table_path_.string());
        struct stat st {};
        if (::fstat(table_.get(), &st) != 0) throw_errno("stat", table_path_.string());
        if (st.st_size == 0) write_all(table_.get(), std::string(oci::OwnerTable::kHeader) + "\n", table_path_.string());
    }
    write_all(table_.get(), line, table_path_.string());
}

}  // namespace aishell::runtime
