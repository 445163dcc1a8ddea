// Directory (overlayfs format) -> OCI layer blob. See layer_write.hpp.
#include "oci/layer_write.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "oci/archive_api.hpp"
#include "oci/compress.hpp"

namespace aishell::oci {

namespace {

using media_type::Compression;

constexpr std::size_t kChunk = 1 << 20;
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

struct ArchiveWriteDeleter {
    void operator()(archive* a) const noexcept { archive_write_free(a); }
};
using ArchiveWriter = std::unique_ptr<archive, ArchiveWriteDeleter>;
struct EntryDeleter {
    void operator()(archive_entry* e) const noexcept { archive_entry_free(e); }
};
using Entry = std::unique_ptr<archive_entry, EntryDeleter>;
struct DirDeleter {
    void operator()(DIR* d) const noexcept { closedir(d); }
};

// The tar stream's destination: hashes the uncompressed bytes (diff_id), then compresses.
struct TarSink {
    Sha256 diff;
    LayerCompressor* compressor = nullptr;
    std::exception_ptr error;  // an exception cannot cross libarchive's C frames
};

la_ssize_t tar_write_callback(archive*, void* client, const void* buffer, size_t length) {
    auto* sink = static_cast<TarSink*>(client);
    try {
        sink->diff.update(buffer, length);
        sink->compressor->write(buffer, length);
        return static_cast<la_ssize_t>(length);
    } catch (...) {
        sink->error = std::current_exception();
        return -1;
    }
}

bool is_kept_xattr(std::string_view name) {
    if (name == "security.capability") return true;
    return name.starts_with("user.") && !name.starts_with("user.overlay.");
}

bool is_opaque_marker_xattr(std::string_view name) {
    return name == "user.overlay.opaque" || name == "trusted.overlay.opaque";
}

// overlayfs stores it on a copied-up entry (Documentation/filesystems/overlayfs.rst, "Origin
// file handle"), possibly empty (a "null" origin); a new entry in the upper dir has none.
bool is_origin_xattr(std::string_view name) {
    return name == "user.overlay.origin" || name == "trusted.overlay.origin";
}

// Reads the xattrs of name in dirfd without following a symlink. The /proc/self/fd path is
// the only way to name an entry relative to a dir fd for the l*xattr calls.
std::map<std::string, std::string> read_xattrs(int dirfd, const std::string& name) {
    std::map<std::string, std::string> out;
    std::string path = "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
    ssize_t size = ::llistxattr(path.c_str(), nullptr, 0);
    if (size <= 0) return out;  // none, or a filesystem without xattrs
    std::string names(static_cast<std::size_t>(size), '\0');
    size = ::llistxattr(path.c_str(), names.data(), names.size());
    if (size < 0) throw_errno("list xattrs of", name);
    names.resize(static_cast<std::size_t>(size));
    for (std::size_t start = 0; start < names.size();) {
        std::string key = names.c_str() + start;
        start += key.size() + 1;
        if (!is_kept_xattr(key) && !is_opaque_marker_xattr(key) && !is_origin_xattr(key)) continue;
        ssize_t vsize = ::lgetxattr(path.c_str(), key.c_str(), nullptr, 0);
        if (vsize < 0) continue;  // vanished or refused: not part of the layer
        std::string value(static_cast<std::size_t>(vsize), '\0');
        vsize = ::lgetxattr(path.c_str(), key.c_str(), value.data(), value.size());
        if (vsize < 0) continue;
        value.resize(static_cast<std::size_t>(vsize));
        out.emplace(std::move(key), std::move(value));
    }
    return out;
}

std::vector<std::string> sorted_names(int dirfd, const std::string& where) {
    int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw_errno("dup", where);
    std::unique_ptr<DIR, DirDeleter> dir(::fdopendir(dup));
    if (!dir) {
        ::close(dup);
        throw_errno("read dir", where);
    }
    ::rewinddir(dir.get());
    std::vector<std::string> names;
    errno = 0;
    while (dirent* d = ::readdir(dir.get())) {
        std::string_view n = d->d_name;
        if (n != "." && n != "..") names.emplace_back(n);
        errno = 0;
    }
    if (errno != 0) throw_errno("read dir", where);
    std::sort(names.begin(), names.end());  // bytewise: the order does not depend on the locale
    return names;
}

class TreeWriter {
public:
    TreeWriter(archive* a, const LayerWriteOptions& options) : a_(a), options_(options), buffer_(kChunk) {}

    void write_dir_contents(int dirfd, const std::string& prefix) {
        for (const auto& name : sorted_names(dirfd, prefix.empty() ? "." : prefix))
            write_entry(dirfd, name, prefix + name);
    }
    std::uint64_t entries() const noexcept { return entries_; }
    std::uint64_t owners_from_table() const noexcept { return owners_from_table_; }
    OwnerTable take_applied() { return std::move(applied_); }

private:
    void write_entry(int dirfd, const std::string& name, const std::string& path) {
        struct stat st {};
        if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_errno("stat", path);
        if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
            write_whiteout(path, st);
            return;
        }
        auto xattrs = read_xattrs(dirfd, name);
        bool opaque = false, copied_up = false;
        for (const auto& [key, value] : xattrs) {
            if (is_opaque_marker_xattr(key)) opaque = opaque || value == "y";
            if (is_origin_xattr(key)) copied_up = true;
        }
        // A directory that is not opaque is merged with the lower layers' one.
        const bool from_lower = S_ISDIR(st.st_mode) ? !opaque : copied_up;
        Entry e = header(dirfd, name, path, st, from_lower);
        for (const auto& [key, value] : xattrs) {
            if (is_opaque_marker_xattr(key) || is_origin_xattr(key)) continue;
            archive_entry_xattr_add_entry(e.get(), key.c_str(), value.data(), value.size());
        }
        if (S_ISDIR(st.st_mode)) {
            archive_entry_set_pathname(e.get(), (path + "/").c_str());
            put_header(e.get(), path);
            UniqueFd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!sub) throw_errno("open dir", path);
            if (opaque) write_marker(path + "/" + std::string(kOpaqueMarker), st);
            write_dir_contents(sub.get(), path + "/");
            return;
        }
        if (S_ISREG(st.st_mode)) {
            if (st.st_nlink > 1) {
                auto [it, first] = links_.try_emplace({st.st_dev, st.st_ino}, path);
                if (!first) {
                    archive_entry_set_hardlink(e.get(), it->second.c_str());
                    archive_entry_set_size(e.get(), 0);
                    put_header(e.get(), path);
                    return;
                }
            }
            put_header(e.get(), path);
            copy_file(dirfd, name, path, static_cast<std::uint64_t>(st.st_size));
            return;
        }
        if (S_ISLNK(st.st_mode)) {
            std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
            ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
            if (n < 0) throw_errno("read link", path);
            target.resize(static_cast<std::size_t>(n));
            archive_entry_set_symlink(e.get(), target.c_str());
        }
        // Symlinks, fifos and devices have no data.
        put_header(e.get(), path);
    }

    Entry header(int dirfd, const std::string& name, const std::string& path, const struct stat& st,
                 bool from_lower) {
        Entry e(archive_entry_new());
        if (!e) throw Error("out of memory");
        archive_entry_set_pathname(e.get(), path.c_str());
        archive_entry_set_mode(e.get(), st.st_mode);  // type and permission bits, setuid included
        LayerOwner owner{st.st_uid, st.st_gid};
        if (options_.map_owner) owner = options_.map_owner(path, owner);
        if (auto intended = intended_owner(dirfd, name, path, st, from_lower)) owner = *intended;
        archive_entry_set_uid(e.get(), owner.uid);
        archive_entry_set_gid(e.get(), owner.gid);
        archive_entry_set_mtime(e.get(), mtime(st.st_mtim.tv_sec), 0);
        if (S_ISREG(st.st_mode)) archive_entry_set_size(e.get(), st.st_size);
        else archive_entry_set_size(e.get(), 0);
        if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) archive_entry_set_rdev(e.get(), st.st_rdev);
        return e;
    }

    // The owner a table gives this entry: the tree's own table when it has a record of this
    // very inode, else, for an entry copied up from the lower layers, theirs. The identity
    // (statx: type, inode, birth time) is read only for entries a table may know.
    std::optional<LayerOwner> intended_owner(int dirfd, const std::string& name, const std::string& path,
                                             const struct stat& st, bool from_lower) {
        std::optional<EntryIdentity> id;
        auto identity = [&]() -> const EntryIdentity& {
            if (!id) id = entry_identity_at(dirfd, name);
            if (!id) throw Error("layer entry '" + path + "' vanished while the layer was written");
            return *id;
        };
        std::optional<LayerOwner> owner;
        const OwnerTable* own = options_.owners;
        if (own && !own->empty() && (own->find(path) || (!S_ISDIR(st.st_mode) && st.st_nlink > 1)))
            owner = own->owner_of(path, identity());
        const LayeredOwners* lower = options_.lower_owners;
        if (!owner && from_lower && lower && lower->has_records()) owner = lower->owner_of(path);
        if (!owner && options_.new_entry_owner && !(from_lower && lower && lower->shows(path)))
            owner = *options_.new_entry_owner;
        if (!owner) return std::nullopt;
        ++owners_from_table_;
        applied_.set(path, OwnerRecord::for_entry(*owner, identity()));
        return owner;
    }

    std::int64_t mtime(std::int64_t seconds) const {
        if (options_.clamp_mtime && seconds > *options_.clamp_mtime) return *options_.clamp_mtime;
        return seconds;
    }

    void write_whiteout(const std::string& path, const struct stat& st) {
        auto slash = path.rfind('/');
        std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
        std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
        write_marker(dir + std::string(kWhiteoutPrefix) + base, st);
    }

    // An empty regular file (whiteouts and opaque markers), owned by root as Docker writes them.
    void write_marker(const std::string& path, const struct stat& st) {
        Entry e(archive_entry_new());
        if (!e) throw Error("out of memory");
        archive_entry_set_pathname(e.get(), path.c_str());
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_perm(e.get(), 0);
        archive_entry_set_size(e.get(), 0);
        archive_entry_set_mtime(e.get(), mtime(st.st_mtim.tv_sec), 0);
        put_header(e.get(), path);
    }

    // ARCHIVE_WARN is the pax writer saying that a name or link target is not UTF-8: the entry
    // is written, with the raw bytes under hdrcharset=BINARY (see ScopedCtype), which is what a
    // layer must hold. In libarchive's pax writer (3.6, archive_write_set_format_pax.c) every
    // other ARCHIVE_WARN is about uname, gname or ACL text, none of which a layer entry has.
    void put_header(archive_entry* e, const std::string& path) {
        int r = archive_write_header(a_, e);
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
            throw Error("layer entry '" + path + "': " + archive_error_string(a_));
        ++entries_;
    }

    void copy_file(int dirfd, const std::string& name, const std::string& path, std::uint64_t size) {
        UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) throw_errno("open", path);
        std::uint64_t left = size;
        while (left > 0) {
            ssize_t n = ::read(fd.get(), buffer_.data(), std::min<std::uint64_t>(buffer_.size(), left));
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_errno("read", path);
            }
            if (n == 0) throw Error("layer entry '" + path + "': the file shrank while it was read");
            if (archive_write_data(a_, buffer_.data(), static_cast<std::size_t>(n)) != n)
                throw Error("layer entry '" + path + "': " + archive_error_string(a_));
            left -= static_cast<std::uint64_t>(n);
        }
    }

    archive* a_;
    const LayerWriteOptions& options_;
    std::vector<char> buffer_;
    std::map<std::pair<dev_t, ino_t>, std::string> links_;
    std::uint64_t entries_ = 0;
    std::uint64_t owners_from_table_ = 0;
    OwnerTable applied_;
};

}  // namespace

// layer_write.hpp's interface over compress.hpp's compressors.
class BlobCompressor final : public LayerCompressor {
public:
    explicit BlobCompressor(std::unique_ptr<Compressor> inner) : inner_(std::move(inner)) {}
    void write(const void* data, std::size_t size) override { inner_->write(data, size); }
    void finish() override { inner_->finish(); }

private:
    std::unique_ptr<Compressor> inner_;
};

std::unique_ptr<LayerCompressor> make_layer_compressor(BlobWriter& out, Compression compression, int level) {
    return std::make_unique<BlobCompressor>(
        make_compressor([&out](const void* data, std::size_t size) { out.write(data, size); }, compression, level));
}

std::string_view layer_media_type(Compression compression) {
    switch (compression) {
        case Compression::None: return media_type::kOciLayerTar;
        case Compression::Gzip: return media_type::kOciLayerGzip;
        case Compression::Zstd: return media_type::kOciLayerZstd;
    }
    return media_type::kOciLayerTar;
}

std::optional<LayerWriteResult> write_layer(Store& store, int dirfd, const LayerWriteOptions& options) {
    if (sorted_names(dirfd, ".").empty()) return std::nullopt;

    // Names are bytes: they must reach the tar unchanged whatever the user's locale.
    ScopedCtype ctype(ScopedCtype::Kind::Utf8);
    BlobWriter blob = store.begin_blob();
    auto compressor = make_layer_compressor(blob, options.compression, options.level);
    TarSink sink;
    sink.compressor = compressor.get();

    ArchiveWriter a(archive_write_new());
    if (!a) throw Error("out of memory");
    // PAX restricted: ustar headers, PAX extensions only where ustar cannot say it (long
    // names, xattrs, large ids), as Go's archive/tar writes layers.
    archive_write_set_format_pax_restricted(a.get());
    archive_write_set_bytes_per_block(a.get(), 512);
    archive_write_set_bytes_in_last_block(a.get(), 1);  // no padding after the end blocks
    if (archive_write_open2(a.get(), &sink, nullptr, tar_write_callback, nullptr, nullptr) != ARCHIVE_OK)
        throw Error(std::string("layer: ") + archive_error_string(a.get()));

    TreeWriter writer(a.get(), options);
    try {
        writer.write_dir_contents(dirfd, "");
        if (archive_write_close(a.get()) != ARCHIVE_OK)
            throw Error(std::string("layer: ") + archive_error_string(a.get()));
    } catch (...) {
        if (sink.error) std::rethrow_exception(sink.error);
        throw;
    }
    if (sink.error) std::rethrow_exception(sink.error);
    compressor->finish();

    LayerWriteResult result;
    result.entries = writer.entries();
    result.owners_from_table = writer.owners_from_table();
    result.owners = writer.take_applied();
    result.uncompressed_bytes = sink.diff.bytes();
    result.diff_id = sink.diff.finish();
    result.descriptor.media_type = std::string(layer_media_type(options.compression));
    result.descriptor.size = static_cast<std::int64_t>(blob.size());
    result.descriptor.digest = blob.commit_computed();
    return result;
}

}  // namespace aishell::oci
