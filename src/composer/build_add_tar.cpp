// ADD's tar extraction (see build_add_tar.hpp).
#include "composer/build_add_tar.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include <archive.h>
#include <archive_entry.h>

#include "common/error.hpp"
#include "oci/archive_api.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;

struct ArchiveReadDeleter {
    void operator()(archive* a) const noexcept { archive_read_free(a); }
};
struct ArchiveWriteDeleter {
    void operator()(archive* a) const noexcept { archive_write_free(a); }
};

// A tar that ADD extracts: recognised by its content, plain or compressed as Docker reads it
// (BuildKit uses the same code: oci::support_docker_tar).
std::unique_ptr<archive, ArchiveReadDeleter> open_tar(int fd) {
    std::unique_ptr<archive, ArchiveReadDeleter> a(archive_read_new());
    oci::support_docker_tar(a.get());
    if (archive_read_open_fd(a.get(), fd, 1 << 16) != ARCHIVE_OK) return nullptr;
    return a;
}

// The owner libarchive could not set keeps the entry's set-id bits off (it restores them only
// for the right owner); with the owner recorded for the layer, they are the tar's again.
void record_extracted_owner(archive_entry* entry, const std::string& path, OwnerRecorder* owners) {
    if (!owners) return;
    CopyOwner wanted{static_cast<std::uint32_t>(archive_entry_uid(entry)),
                     static_cast<std::uint32_t>(archive_entry_gid(entry))};
    owners->owner_attempted(path, wanted);
    const mode_t mode = archive_entry_mode(entry);
    if (!(mode & (S_ISUID | S_ISGID)) || !(S_ISREG(mode) || S_ISDIR(mode))) return;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || (st.st_mode & S_IFMT) != (mode & S_IFMT)) return;
    if (st.st_uid == wanted.uid && st.st_gid == wanted.gid) return;
    if (::chmod(path.c_str(), mode & 07777) != 0) throw_errno("chmod", path);
}

// Whether a member names the destination itself ("", ".", "./", "/"): Docker's Unpack
// (moby/go-archive) skips it, so the directory keeps its own metadata.
bool names_extract_root(const char* name) {
    return fs::path("/" + std::string(name ? name : "")).lexically_normal() == "/";
}

// Whether the member name reaches its path through a symlink or a "..": then the path is not
// beneath dest as the name says, and libarchive (SECURE_SYMLINKS, SECURE_NODOTDOT) refuses the
// name or replaces the link; a removal would follow it to where it points (a link to / made
// `ADD t.tar /x/` with members l -> / and l/bin remove the image's /bin).
bool leaves_dest(const std::string& dest, const std::string& name) {
    std::string cur = dest == "/" ? "" : dest;
    auto parts = split_path(name);
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (parts[i] == "..") return true;
        if (i + 1 == parts.size()) break;  // the last component itself is what gets replaced
        cur += "/" + parts[i];
        struct stat st {};
        if (::lstat(cur.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) return true;
    }
    return false;
}

// What stands at path (dest + "/" + the member's name) goes unless a directory meets a directory
// (go-archive's Unpack removes it, a whole tree included); libarchive's ARCHIVE_EXTRACT_UNLINK
// removes files and empty directories only, so a directory with content is removed here, and
// only beneath dest.
void clear_for_member(const std::string& dest, std::string path, bool member_is_dir, OwnerRecorder* owners) {
    const std::string name = path.substr(std::min(path.size(), dest.size()));  // path is dest + "/" + name
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    struct stat st {};
    if (member_is_dir || leaves_dest(dest, name) || ::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
    if (owners) owners->removed(path);
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec) throw Error("ADD: replace directory " + path + ": " + ec.message());
}

// A member name of an ADDed tar as a path beneath dest, its parents resolved with dest as the
// root (resolve_in_root): a member "l/etc/f" after "l -> .." lands in dest/etc/f and keeps the
// link, as Docker's chrootarchive.Untar (chrooted into the destination) writes it. Its last
// component is never followed: what stands there is replaced. Names that climb out of dest
// ("../x") are refused, as go-archive refuses them (breakoutError).
std::string member_path(const std::string& dest, const std::string& name, const std::string& what) {
    const std::string clean = fs::path(name).lexically_normal().string();
    if (clean == ".." || clean.starts_with("../"))
        throw Error("ADD " + what + ": member " + name + " names a path outside the destination",
                    "the archive is refused, as Docker refuses it");
    auto parts = split_path(clean);
    if (parts.empty() || (parts.size() == 1 && parts[0] == ".")) return dest + "/" + name;
    std::string base = parts.back();
    parts.pop_back();
    std::string parent;
    for (const auto& p : parts) parent += (parent.empty() ? "" : "/") + p;
    std::string dir = parent.empty() ? dest : resolve_in_root(dest, parent);
    return (dir == "/" ? "" : dir) + "/" + base;
}

}  // namespace

// Whether ADD extracts the regular file open on fd: a first tar header must parse, as in
// Docker's isArchivePath (tar.NewReader(DecompressStream(f)).Next() == nil); a file whose
// only content is the end-of-archive blocks, or an empty file, is copied. The probe reads
// the file through libarchive, so the fd is rewound before the answer is given, whatever it
// is: the caller copies or extracts from the same fd. (It used to return early when
// archive_read_open_fd already found no tar, leaving the offset where libarchive's read-ahead
// stopped, and ADD copied the rest: a small file arrived empty, a large one truncated.)
bool is_tar_archive(int fd, const std::string& rel) {
    bool tar = false;
    if (auto a = open_tar(fd)) {
        archive_entry* entry = nullptr;
        int r = archive_read_next_header(a.get(), &entry);
        tar = r == ARCHIVE_OK || r == ARCHIVE_WARN;
    }
    if (::lseek(fd, 0, SEEK_SET) != 0) throw_errno("rewind", rel);
    return tar;
}

// chown: ADD --chown's owner for every member, as BuildKit's unpack passes ChownOpts to
// Untar since 46e52f4 ("file: add chown to archive unpack from copy", Docker 28.2); the
// classic builder kept the members' own owners.
void extract_tar(int fd, const std::string& dest, const std::string& what, std::optional<CopyOwner> chown,
                 OwnerRecorder* owners) {
    auto in = open_tar(fd);
    if (!in) throw Error("ADD " + what + ": cannot read the archive");
    std::unique_ptr<archive, ArchiveWriteDeleter> out(archive_write_disk_new());
    archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_OWNER |
                                                  ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                  ARCHIVE_EXTRACT_UNLINK);
    // Numeric ids, as Docker's archive.Untar: no user/group name lookup (no NSS in the chroot).
    for (;;) {
        archive_entry* entry = nullptr;
        int r = archive_read_next_header(in.get(), &entry);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) throw Error("ADD " + what + ": " + archive_error_string(in.get()));
        if (names_extract_root(archive_entry_pathname(entry))) continue;
        // Names are taken relative to dest (a leading "/" too), symlinks on the way resolved
        // beneath it (member_path); the helper is chrooted into the step's rootfs besides.
        std::string path = member_path(dest, archive_entry_pathname(entry), what);
        archive_entry_set_pathname(entry, path.c_str());
        if (const char* hl = archive_entry_hardlink(entry)) {
            std::string target = member_path(dest, hl, what);
            archive_entry_set_hardlink(entry, target.c_str());
        }
        // Device nodes cannot be made inside a user namespace (every build step runs in one):
        // skipped, as containers/storage skips them when it unpacks in a user namespace.
        const auto type = archive_entry_filetype(entry);
        if (type == AE_IFCHR || type == AE_IFBLK) continue;
        if (chown) {
            archive_entry_set_uid(entry, chown->uid);
            archive_entry_set_gid(entry, chown->gid);
        }
        clear_for_member(dest, path, type == AE_IFDIR, owners);
        r = archive_write_header(out.get(), entry);
        if (r < ARCHIVE_WARN) throw Error("ADD " + what + ": " + path + ": " + archive_error_string(out.get()));
        if (archive_entry_size(entry) > 0 && r >= ARCHIVE_WARN) {
            const void* buf;
            size_t size;
            la_int64_t offset;
            while ((r = archive_read_data_block(in.get(), &buf, &size, &offset)) == ARCHIVE_OK)
                if (archive_write_data_block(out.get(), buf, size, offset) < ARCHIVE_WARN)
                    throw Error("ADD " + what + ": " + path + ": " + archive_error_string(out.get()));
            if (r < ARCHIVE_WARN) throw Error("ADD " + what + ": " + archive_error_string(in.get()));
        }
        if (archive_write_finish_entry(out.get()) < ARCHIVE_WARN)
            throw Error("ADD " + what + ": " + path + ": " + archive_error_string(out.get()));
        record_extracted_owner(entry, path, owners);
    }
}

}  // namespace aishell::composer
