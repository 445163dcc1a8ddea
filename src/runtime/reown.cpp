// Re-owned layer trees for keep-id (see reown.hpp).
#include "runtime/reown.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <map>
#include <memory>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "oci/digest.hpp"
#include "runtime/helpers.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::runtime {

namespace {

std::optional<std::uint32_t> outside_of(const std::vector<IdRange>& ranges, std::uint32_t inside) {
    for (const auto& r : ranges)
        if (inside >= r.inside && inside - r.inside < r.count) return r.outside + (inside - r.inside);
    return std::nullopt;
}

std::optional<std::uint32_t> inside_of(const std::vector<IdRange>& ranges, std::uint32_t outside) {
    for (const auto& r : ranges)
        if (outside >= r.outside && outside - r.outside < r.count) return r.inside + (outside - r.outside);
    return std::nullopt;
}

// ---- the copy ----------------------------------------------------------------------------------

// security.capability as stored (struct vfs_ns_cap_data, little endian): v2 has no root id
// (meaning the reading namespace's root), v3 names it. The copy gets a v3 value whose root id
// is where the original's root lands.
constexpr std::uint32_t kCapRevisionMask = 0xFF000000u;
constexpr std::uint32_t kCapRevision2 = 0x02000000u;
constexpr std::uint32_t kCapRevision3 = 0x03000000u;
constexpr std::size_t kCapSize2 = 20, kCapSize3 = 24;

std::uint32_t get_le32(const char* p) {
    auto b = reinterpret_cast<const unsigned char*>(p);
    return b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
}

void put_le32(char* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

std::string shift_capability(const std::string& value, const OwnerShift& shift) {
    if (value.size() < kCapSize2) return value;
    std::uint32_t rev = get_le32(value.data()) & kCapRevisionMask;
    std::uint32_t root = 0;
    if (rev == kCapRevision3 && value.size() >= kCapSize3) root = get_le32(value.data() + kCapSize2);
    else if (rev != kCapRevision2) return value;
    auto shifted = shift.uid(root);
    if (!shifted) throw Error("file capability root id " + std::to_string(root) + " is not mapped");
    std::string out = value.substr(0, kCapSize2);
    put_le32(out.data(), (get_le32(out.data()) & ~kCapRevisionMask) | kCapRevision3);
    out.resize(kCapSize3);
    put_le32(out.data() + kCapSize2, *shifted);
    return out;
}

class TreeCopier {
public:
    TreeCopier(const OwnerShift& shift, int dst_root) : shift_(shift), dst_root_(dst_root) {}

    void copy_dir_contents(int src, int dst, const std::string& rel) {
        UniqueFd listing(::openat(src, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!listing) throw_errno("open", rel.empty() ? "." : rel);
        std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(listing.get()), ::closedir);
        if (!dir) throw_errno("opendir", rel);
        listing.release();
        std::vector<std::string> names;
        while (dirent* e = ::readdir(dir.get())) {
            if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
            names.emplace_back(e->d_name);
        }
        for (const auto& name : names) copy_entry(src, dst, name, rel.empty() ? name : rel + "/" + name);
    }

    // The root dir's own owner, mode, xattrs and times (its entries are copied already).
    void finish_root(int src, int dst) {
        struct stat st {};
        if (::fstat(src, &st) != 0) throw_errno("stat", ".");
        finish_fd(src, dst, st, ".");
    }

    ReownStats stats;

private:
    std::uint32_t new_uid(std::uint32_t uid, const std::string& rel) const {
        auto v = shift_.uid(uid);
        if (!v) throw Error("'" + rel + "': owner " + std::to_string(uid) + " has no place in the keep-id mapping");
        return *v;
    }
    std::uint32_t new_gid(std::uint32_t gid, const std::string& rel) const {
        auto v = shift_.gid(gid);
        if (!v) throw Error("'" + rel + "': group " + std::to_string(gid) + " has no place in the keep-id mapping");
        return *v;
    }

    void copy_xattrs(int src, int dst, const std::string& rel) {
        ssize_t n = ::flistxattr(src, nullptr, 0);
        if (n <= 0) return;
        std::string names(static_cast<std::size_t>(n), '\0');
        n = ::flistxattr(src, names.data(), names.size());
        if (n < 0) throw_errno("list xattrs of", rel);
        names.resize(static_cast<std::size_t>(n));
        for (std::size_t pos = 0; pos < names.size();) {
            std::string name(names.c_str() + pos);
            pos += name.size() + 1;
            ssize_t len = ::fgetxattr(src, name.c_str(), nullptr, 0);
            if (len < 0) {
                if (errno == ENODATA || errno == EOPNOTSUPP) continue;
                throw_errno("get xattr " + name + " of", rel);
            }
            std::string value(static_cast<std::size_t>(len), '\0');
            len = ::fgetxattr(src, name.c_str(), value.data(), value.size());
            if (len < 0) throw_errno("get xattr " + name + " of", rel);
            value.resize(static_cast<std::size_t>(len));
            if (name == "security.capability") value = shift_capability(value, shift_);
            if (::fsetxattr(dst, name.c_str(), value.data(), value.size(), 0) != 0) {
                // trusted.* and other namespaces the user namespace may not write: the extractor
                // could not have written them either, so nothing is lost that was there.
                if (errno == EPERM || errno == EOPNOTSUPP) continue;
                throw_errno("set xattr " + name + " of", rel);
            }
        }
    }

    // Owner before mode (chown clears setuid/setgid) and before xattrs (it drops file caps);
    // times last.
    void finish_fd(int src, int dst, const struct stat& st, const std::string& rel) {
        if (::fchown(dst, new_uid(st.st_uid, rel), new_gid(st.st_gid, rel)) != 0) throw_errno("chown", rel);
        copy_xattrs(src, dst, rel);
        if (::fchmod(dst, st.st_mode & 07777) != 0) throw_errno("chmod", rel);
        timespec times[2] = {st.st_atim, st.st_mtim};
        if (::futimens(dst, times) != 0) throw_errno("set times of", rel);
    }

    void copy_data(int src, int dst, const std::string& rel) {
        if (::ioctl(dst, FICLONE, src) == 0) return;  // reflink where the filesystem shares extents
        for (;;) {
            ssize_t n = ::copy_file_range(src, nullptr, dst, nullptr, 1 << 30, 0);
            if (n == 0) return;
            if (n > 0) continue;
            if (errno == EINTR) continue;
            if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP) break;
            throw_errno("copy", rel);
        }
        char buf[65536];
        for (;;) {
            ssize_t n = ::read(src, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("read", rel);
            if (n == 0) return;
            write_all(dst, std::string_view(buf, static_cast<std::size_t>(n)), rel);
        }
    }

    void copy_entry(int src_dir, int dst_dir, const std::string& name, const std::string& rel) {
        struct stat st {};
        if (::fstatat(src_dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("stat", rel);
        ++stats.entries;
        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
            auto key = std::make_pair(st.st_dev, st.st_ino);
            auto it = links_.find(key);
            if (it != links_.end()) {
                if (::linkat(dst_root_, it->second.c_str(), dst_dir, name.c_str(), 0) != 0) throw_errno("link", rel);
                return;
            }
            links_.emplace(key, rel);
        }
        if (S_ISDIR(st.st_mode)) {
            if (::mkdirat(dst_dir, name.c_str(), 0700) != 0) throw_errno("mkdir", rel);
            UniqueFd s(::openat(src_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!s) throw_errno("open", rel);
            UniqueFd d(::openat(dst_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!d) throw_errno("open", rel);
            copy_dir_contents(s.get(), d.get(), rel);
            finish_fd(s.get(), d.get(), st, rel);
        } else if (S_ISREG(st.st_mode)) {
            UniqueFd s(::openat(src_dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!s) throw_errno("open", rel);
            UniqueFd d(::openat(dst_dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!d) throw_errno("create", rel);
            copy_data(s.get(), d.get(), rel);
            finish_fd(s.get(), d.get(), st, rel);
        } else if (S_ISLNK(st.st_mode)) {
            std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
            ssize_t n = ::readlinkat(src_dir, name.c_str(), target.data(), target.size());
            if (n < 0) throw_errno("readlink", rel);
            target.resize(static_cast<std::size_t>(n));
            if (::symlinkat(target.c_str(), dst_dir, name.c_str()) != 0) throw_errno("symlink", rel);
            if (::fchownat(dst_dir, name.c_str(), new_uid(st.st_uid, rel), new_gid(st.st_gid, rel), AT_SYMLINK_NOFOLLOW) != 0)
                throw_errno("chown", rel);
            timespec times[2] = {st.st_atim, st.st_mtim};
            if (::utimensat(dst_dir, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("set times of", rel);
        } else {
            copy_special(src_dir, dst_dir, name, rel, st);
        }
    }

    // Whiteouts (char 0/0), fifos and sockets; other device nodes cannot be made in a user
    // namespace (the extractor skipped them too).
    void copy_special(int src_dir, int dst_dir, const std::string& name, const std::string& rel, const struct stat& st) {
        bool whiteout = S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
        if ((S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) && !whiteout) {
            ++stats.skipped_devices;
            return;
        }
        if (::mknodat(dst_dir, name.c_str(), st.st_mode & (S_IFMT | 07777), st.st_rdev) != 0) throw_errno("mknod", rel);
        if (::fchownat(dst_dir, name.c_str(), new_uid(st.st_uid, rel), new_gid(st.st_gid, rel), AT_SYMLINK_NOFOLLOW) != 0)
            throw_errno("chown", rel);
        if (::fchmodat(dst_dir, name.c_str(), st.st_mode & 07777, 0) != 0) throw_errno("chmod", rel);
        // Whiteouts may carry overlay xattrs; O_PATH fds cannot get xattrs, so by path.
        std::string path = "/proc/self/fd/" + std::to_string(src_dir) + "/" + name;
        std::string dpath = "/proc/self/fd/" + std::to_string(dst_dir) + "/" + name;
        char names[4096];
        ssize_t n = ::llistxattr(path.c_str(), names, sizeof names);
        for (ssize_t pos = 0; n > 0 && pos < n;) {
            const char* xname = names + pos;
            pos += static_cast<ssize_t>(std::strlen(xname)) + 1;
            char value[4096];
            ssize_t len = ::lgetxattr(path.c_str(), xname, value, sizeof value);
            if (len >= 0) (void)::lsetxattr(dpath.c_str(), xname, value, static_cast<std::size_t>(len), 0);
        }
        timespec times[2] = {st.st_atim, st.st_mtim};
        if (::utimensat(dst_dir, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("set times of", rel);
    }

    const OwnerShift& shift_;
    int dst_root_;
    std::map<std::pair<dev_t, ino_t>, std::string> links_;  // first path of each multi-link inode
};

}  // namespace

OwnerShift owner_shift(const IdMapping& from, const IdMapping& to) {
    OwnerShift s;
    s.uid = [from = from.uids, to = to.uids](std::uint32_t u) -> std::optional<std::uint32_t> {
        auto host = outside_of(to, u);
        return host ? inside_of(from, *host) : std::nullopt;
    };
    s.gid = [from = from.gids, to = to.gids](std::uint32_t g) -> std::optional<std::uint32_t> {
        auto host = outside_of(to, g);
        return host ? inside_of(from, *host) : std::nullopt;
    };
    return s;
}

ReownStats copy_tree_reowned(const std::filesystem::path& src, const std::filesystem::path& dst, const OwnerShift& shift) {
    UniqueFd s(::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!s) throw_errno("open", src.string());
    if (::mkdir(dst.c_str(), 0700) != 0) throw_errno("mkdir", dst.string());
    UniqueFd d(::open(dst.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d) throw_errno("open", dst.string());
    TreeCopier copier(shift, d.get());
    with_context("re-own " + src.string(), [&] {
        copier.copy_dir_contents(s.get(), d.get(), "");
        copier.finish_root(s.get(), d.get());
    });
    return copier.stats;
}

std::filesystem::path reowned_layers_dir(const std::filesystem::path& store_root, const IdMapping& to) {
    oci::Sha256 h;
    h.update(to.to_string());
    return store_root / ("layers-idmap-" + std::string(h.finish().encoded().substr(0, 16)));
}

std::vector<std::filesystem::path> reowned_layers_dirs(const std::filesystem::path& store_root) {
    std::vector<std::filesystem::path> dirs;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(store_root, ec), end; !ec && it != end; it.increment(ec))
        if (it->path().filename().string().starts_with("layers-idmap-") && it->is_directory(ec)) dirs.push_back(it->path());
    return dirs;
}

std::filesystem::path ensure_reowned_layers(const std::filesystem::path& store_root, const IdMapping& store_mapping,
                                            const IdMapping& to, const std::vector<std::string>& layers) {
    auto dir = reowned_layers_dir(store_root, to);
    std::vector<std::string> args{store_root.string(), store_mapping.to_string(), to.to_string()};
    for (const auto& hex : layers)
        if (!std::filesystem::exists(dir / hex)) args.push_back(hex);
    if (args.size() == 3) return dir;
    make_dirs(dir, 0700);
    // Which mapping these trees are for, for people looking at the store.
    write_file_atomic(dir / "mapping", to.to_string() + "\n", 0644);
    int status = run_in_userns(store_mapping, kReownLayers, args);
    if (status != 0) throw Error("re-owning layers for --userns=keep-id failed (status " + std::to_string(status) + ")");
    return dir;
}

int reown_layers_here(const std::vector<std::string>& args) {
    if (args.size() < 3) throw Error(std::string(kReownLayers.name) + ": bad arguments", kHelperHint);
    std::filesystem::path root(args[0]);
    auto from = IdMapping::parse(args[1]), to = IdMapping::parse(args[2]);
    auto shift = owner_shift(from, to);
    auto dir = reowned_layers_dir(root, to);
    for (std::size_t i = 3; i < args.size(); ++i) {
        const std::string& hex = args[i];
        if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
            throw Error(std::string(kReownLayers.name) + ": bad layer name '" + hex + "'");
        auto final_path = dir / hex;
        if (std::filesystem::exists(final_path)) continue;
        // Built under a temporary name and renamed: a crash never leaves a tree a later run trusts.
        auto tmp = dir / (".tmp-" + hex + "-" + random_hex(8));
        try {
            auto stats = copy_tree_reowned(root / "layers" / hex, tmp, shift);
            if (stats.skipped_devices > 0)
                std::cerr << "aishell: note: " << stats.skipped_devices << " device node(s) skipped in layer " << hex.substr(0, 12) << "\n";
            // Durable before the rename publishes it (as layers/ are: syncfs, then rename).
            UniqueFd tmp_fd(::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (!tmp_fd || ::syncfs(tmp_fd.get()) != 0) throw_errno("sync", tmp.string());
            if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
                if (errno != EEXIST && errno != ENOTEMPTY) throw_errno("rename", final_path.string());
                remove_tree_here(tmp.string());  // another run made it first
            }
        } catch (...) {
            remove_tree_here(tmp.string());
            throw;
        }
    }
    return 0;
}

}  // namespace aishell::runtime
