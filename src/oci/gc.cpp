// Garbage collection of the store: mark what index.json, the build cache and the live leases
// reach, sweep the rest (blobs, optionally layer trees) and stale temp files. Unknown
// documents are kept, never guessed at.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <set>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "oci/lease.hpp"
#include "oci/store.hpp"

namespace aishell::oci {

namespace {

// What marking found live: blobs, and (when layers are swept) the diff_ids of the configs of
// the marked manifests.
struct Marks {
    const Store& store;
    bool want_layers = false;
    std::set<Digest> blobs;
    std::set<std::string> layers;  // diff_id hex
};

void mark_config_layers(Marks& marks, const Descriptor& config) {
    if (!marks.want_layers || !marks.store.has_blob(config.digest)) return;
    std::string bytes = marks.store.read_blob(config.digest, kMaxConfigSize);
    for (const auto& diff_id : with_context("config " + config.digest.short_form(), [&] {
             return ImageConfig::parse(bytes).diff_ids();
         }))
        if (diff_id.is_sha256()) marks.layers.insert(std::string(diff_id.encoded()));
}

// Marks d and, when it is a manifest or index present in the store, what it references.
void mark(Marks& marks, const Descriptor& d) {
    if (!d.digest.is_sha256() || !marks.blobs.insert(d.digest).second) return;
    if (!marks.store.has_blob(d.digest)) return;
    bool is_document = d.media_type == media_type::kOciIndex || d.media_type == media_type::kDockerList ||
                       d.media_type == media_type::kOciManifest || d.media_type == media_type::kDockerManifest;
    if (!is_document) return;
    std::string bytes = read_manifest_blob(marks.store, d);
    ManifestKind kind = detect_manifest_kind(d.media_type, bytes);
    if (is_index_kind(kind)) {
        for (const auto& child : parse_index(bytes, kind).manifests) mark(marks, child);
    } else if (kind == ManifestKind::OciManifest || kind == ManifestKind::DockerManifest) {
        Manifest m = parse_manifest(bytes, kind);
        marks.blobs.insert(m.config.digest);
        mark_config_layers(marks, m.config);
        for (const auto& layer : m.layers) marks.blobs.insert(layer.digest);
    }
}

// A cache or lease root may name a manifest (then what it references lives too) or any other blob.
void mark_root(Marks& marks, const Digest& root) {
    const Store& store = marks.store;
    auto size = store.has_blob(root) ? store.blob_size(root) : std::nullopt;
    if (size && *size <= kMaxManifestSize) {
        std::string bytes = store.read_blob(root, kMaxManifestSize);
        ManifestKind kind = detect_manifest_kind({}, bytes);
        if (kind == ManifestKind::OciManifest || kind == ManifestKind::DockerManifest || is_index_kind(kind)) {
            Descriptor d;
            d.digest = root;
            d.media_type = std::string(media_type_of(kind));
            d.size = static_cast<std::int64_t>(*size);
            mark(marks, d);
            return;
        }
    }
    marks.blobs.insert(root);
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

bool is_layer_hex(const std::string& s) {
    return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

void sweep_blobs(Store& store, const Marks& marks, const GcOptions& options, GcResult& result) {
    auto consider = [&](const fs::path& file) {
        auto digest = Digest::try_parse("sha256:" + file.filename().string());
        if (digest && marks.blobs.count(*digest)) return;
        std::error_code ec;
        std::uint64_t size = fs::file_size(file, ec);
        if (ec) size = 0;
        if (!options.dry_run && !fs::remove(file, ec) && ec) throw SystemError(ec.value(), "remove blob", file.string());
        if (digest) result.removed_blobs.push_back(*digest);
        result.removed_bytes += size;
    };
    if (options.only_blobs) {
        for (const auto& d : *options.only_blobs)
            if (store.has_blob(d)) consider(store.blob_path(d));
        return;
    }
    for (const auto& file : fs::directory_iterator(store.oci_dir() / "blobs" / "sha256")) consider(file.path());
}

// Trees (and their owner tables) that nothing names are renamed into tmp/ at once, under the
// leases' removal lock, so a command that leases one afterwards finds it gone, never half gone.
void sweep_layers(Store& store, const Marks& marks, const LiveLeases& leased, const GcOptions& options,
                  GcResult& result) {
    std::set<std::string> keep = marks.layers;
    keep.insert(leased.layers.begin(), leased.layers.end());
    for (const auto& d : options.extra_layer_roots)
        if (d.is_sha256()) keep.insert(std::string(d.encoded()));
    for (const auto& entry : fs::directory_iterator(store.layers_dir())) {
        const std::string name = entry.path().filename().string();
        const std::string hex = name.size() == 64 + 7 && name.ends_with(".owners") ? name.substr(0, 64) : name;
        if (!is_layer_hex(hex) || keep.count(hex)) continue;  // not a layer tree, or live
        if (hex != name) {  // an owner table; its tree (if any) is handled on its own
            std::error_code ec;
            if (!options.dry_run) fs::remove(entry.path(), ec);
            continue;
        }
        result.removed_layers.push_back(hex);
        if (options.dry_run) continue;
        fs::path trash = store.tmp_dir() / ("gc-" + hex.substr(0, 12) + "-" + random_hex(8));
        if (::rename(entry.path().c_str(), trash.c_str()) != 0) throw_errno("move layer tree to", trash.string());
        result.layer_trash.push_back(trash);
    }
}

void sweep_temp(Store& store, const GcOptions& options, GcResult& result) {
    for (const auto& file : fs::directory_iterator(store.tmp_dir())) {
        if (!older_than(file.path(), options.stale_after) || in_use(file.path())) continue;
        std::error_code ec;
        if (!options.dry_run) fs::remove_all(file.path(), ec);
        if (!ec) result.removed_temp.push_back(file.path());
    }
}

}  // namespace

GcResult collect_garbage(Store& store, const GcOptions& options) {
    return with_context("garbage collection", [&] {
        // Held from marking to the end of the sweep: a lease taken meanwhile would not be seen.
        LeaseRemovalLock held(store);
        LiveLeases leased = read_live_leases(held, options.own_lease, options.dry_run);
        Marks marks{store, options.sweep_layers, {}, {}};
        for (const auto& entry : store.list_images()) mark(marks, entry.descriptor);
        for (const auto& root : options.extra_roots) mark_root(marks, root);
        for (const auto& root : leased.blobs) mark_root(marks, root);

        GcResult result;
        result.removed_leases = leased.dead;
        sweep_blobs(store, marks, options, result);
        if (options.sweep_layers) sweep_layers(store, marks, leased, options, result);
        if (!options.only_blobs) sweep_temp(store, options, result);
        return result;
    });
}

}  // namespace aishell::oci
