// Garbage collection of the blob store: mark what index.json and the build cache reach,
// sweep the rest and stale temp files. Unknown documents are kept, never guessed at.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <set>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "oci/store.hpp"

namespace aishell::oci {

namespace {

// Marks d and, when it is a manifest or index present in the store, what it references.
void mark(const Store& store, const Descriptor& d, std::set<Digest>& live) {
    if (!d.digest.is_sha256() || !live.insert(d.digest).second) return;
    if (!store.has_blob(d.digest)) return;
    bool is_document = d.media_type == media_type::kOciIndex || d.media_type == media_type::kDockerList ||
                       d.media_type == media_type::kOciManifest || d.media_type == media_type::kDockerManifest;
    if (!is_document) return;
    std::string bytes = read_manifest_blob(store, d);
    ManifestKind kind = detect_manifest_kind(d.media_type, bytes);
    if (is_index_kind(kind)) {
        for (const auto& child : parse_index(bytes, kind).manifests) mark(store, child, live);
    } else if (kind == ManifestKind::OciManifest || kind == ManifestKind::DockerManifest) {
        Manifest m = parse_manifest(bytes, kind);
        live.insert(m.config.digest);
        for (const auto& layer : m.layers) live.insert(layer.digest);
    }
}

// A cache root may name a manifest (then what it references lives too) or any other blob.
void mark_root(const Store& store, const Digest& root, std::set<Digest>& live) {
    auto size = store.has_blob(root) ? store.blob_size(root) : std::nullopt;
    if (size && *size <= kMaxManifestSize) {
        std::string bytes = store.read_blob(root, kMaxManifestSize);
        ManifestKind kind = detect_manifest_kind({}, bytes);
        if (kind == ManifestKind::OciManifest || kind == ManifestKind::DockerManifest || is_index_kind(kind)) {
            Descriptor d;
            d.digest = root;
            d.media_type = std::string(media_type_of(kind));
            d.size = static_cast<std::int64_t>(*size);
            mark(store, d, live);
            return;
        }
    }
    live.insert(root);
}

// A resumable partial that a writer holds (BlobWriter keeps an flock on it) is in use
// however old its mtime is: a slow download must not lose its file mid-transfer.
bool in_use(const fs::path& p) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return false;
    UniqueFd owner(fd);
    return ::flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

bool older_than(const fs::path& p, std::chrono::seconds age) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) < 0) return false;
    return std::time(nullptr) - st.st_mtime > age.count();
}

}  // namespace

GcResult collect_garbage(Store& store, const GcOptions& options) {
    return with_context("garbage collection", [&] {
        std::set<Digest> live;
        for (const auto& entry : store.list_images()) mark(store, entry.descriptor, live);
        for (const auto& root : options.extra_roots) mark_root(store, root, live);

        GcResult result;
        for (const auto& file : fs::directory_iterator(store.oci_dir() / "blobs" / "sha256")) {
            auto digest = Digest::try_parse("sha256:" + file.path().filename().string());
            if (digest && live.count(*digest)) continue;
            std::error_code ec;
            std::uint64_t size = fs::file_size(file.path(), ec);
            if (ec) size = 0;
            if (!options.dry_run && !fs::remove(file.path(), ec) && ec)
                throw SystemError(ec.value(), "remove blob", file.path().string());
            if (digest) result.removed_blobs.push_back(*digest);
            result.removed_bytes += size;
        }
        for (const auto& file : fs::directory_iterator(store.tmp_dir())) {
            if (!older_than(file.path(), options.stale_after) || in_use(file.path())) continue;
            std::error_code ec;
            if (!options.dry_run) fs::remove_all(file.path(), ec);
            if (!ec) result.removed_temp.push_back(file.path());
        }
        return result;
    });
}

}  // namespace aishell::oci
