// Garbage collection of the store: mark what index.json, the build cache and the live leases
// reach, sweep the rest (blobs, optionally layer trees) and stale temp files. Unknown
// documents are kept, never guessed at.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <set>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "oci/gc.hpp"
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

// PruneGcOptions::approved as sets; an absent one approves everything.
struct Approved {
    bool all = true;
    std::set<Digest> blobs;
    std::set<std::string> layers;
    std::set<fs::path> copies, temp;

    explicit Approved(const PruneGcResult* r) {
        if (!r) return;
        all = false;
        blobs.insert(r->gc.removed_blobs.begin(), r->gc.removed_blobs.end());
        layers.insert(r->gc.removed_layers.begin(), r->gc.removed_layers.end());
        copies.insert(r->removed_layer_copies.begin(), r->removed_layer_copies.end());
        temp.insert(r->gc.removed_temp.begin(), r->gc.removed_temp.end());
    }
    template <typename T>
    bool allows(const std::set<T>& set, const T& v) const { return all || set.count(v); }
};

void sweep_blobs(Store& store, const Marks& marks, const GcOptions& options, const Approved& approved,
                 GcResult& result) {
    auto consider = [&](const fs::path& file) {
        auto digest = Digest::try_parse("sha256:" + file.filename().string());
        if (digest && marks.blobs.count(*digest)) return;
        if (!approved.all && (!digest || !approved.blobs.count(*digest))) return;
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

std::set<std::string> kept_layers(const Marks& marks, const LiveLeases& leased, const GcOptions& options) {
    std::set<std::string> keep = marks.layers;
    keep.insert(leased.layers.begin(), leased.layers.end());
    for (const auto& d : options.extra_layer_roots)
        if (d.is_sha256()) keep.insert(std::string(d.encoded()));
    return keep;
}

// Takes a tree out of the store at once (a rename into tmp/, under the leases' removal lock),
// so a command that leases it afterwards finds it gone, never half gone.
void trash_tree(Store& store, const fs::path& tree, const std::string& hex, GcResult& result) {
    fs::path trash = store.tmp_dir() / ("gc-" + hex.substr(0, 12) + "-" + random_hex(8));
    if (::rename(tree.c_str(), trash.c_str()) != 0) throw_errno("move layer tree " + tree.string() + " to", trash.string());
    result.layer_trash.push_back(trash);
}

// Trees (and their owner tables) in layers/ that nothing names.
void sweep_layers(Store& store, const std::set<std::string>& keep, const GcOptions& options, const Approved& approved,
                  GcResult& result) {
    for (const auto& entry : fs::directory_iterator(store.layers_dir())) {
        const std::string name = entry.path().filename().string();
        const std::string hex = name.size() == 64 + 7 && name.ends_with(".owners") ? name.substr(0, 64) : name;
        if (!is_layer_hex(hex) || keep.count(hex)) continue;  // not a layer tree, or live
        if (!approved.allows(approved.layers, hex)) continue;
        if (hex != name) {  // an owner table; its tree (if any) is handled on its own
            std::error_code ec;
            if (!options.dry_run) fs::remove(entry.path(), ec);
            continue;
        }
        result.removed_layers.push_back(hex);
        if (!options.dry_run) trash_tree(store, entry.path(), hex, result);
    }
}

// Copies of layer trees (layer_copy_dirs): <hex> trees, and `.tmp-<hex>-<random>` ones a copier
// left behind (one still being made is for a layer its run has leased, so it is kept). A copy's
// root belongs to a sub id (the keep-id mapping's container root), so the caller may not move it
// to another directory (rename(2) must then rewrite its ".."): it is renamed within its own
// directory to `.gc-*`, where only the parent's write permission counts; a `.gc-*` left by a
// removal that did not finish is trash already.
void sweep_layer_copies(Store&, const fs::path& dir, const std::set<std::string>& keep, const GcOptions& options,
                        const Approved& approved, PruneGcResult& result) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!approved.allows(approved.copies, it->path())) continue;
        if (name.starts_with(".gc-")) {
            result.removed_layer_copies.push_back(it->path());
            if (!options.dry_run) result.gc.layer_trash.push_back(it->path());
            continue;
        }
        const std::string hex = name.starts_with(".tmp-") ? name.substr(5, 64) : name;
        if (!is_layer_hex(hex) || keep.count(hex) || !it->is_directory()) continue;
        result.removed_layer_copies.push_back(it->path());
        if (options.dry_run) continue;
        const fs::path trash = dir / (".gc-" + hex.substr(0, 12) + "-" + random_hex(8));
        if (::rename(it->path().c_str(), trash.c_str()) != 0) throw_errno("move layer tree copy " + it->path().string() + " to", trash.string());
        result.gc.layer_trash.push_back(trash);
    }
    if (ec && ec != std::errc::no_such_file_or_directory) throw SystemError(ec.value(), "list", dir.string());
}

void sweep_temp(Store& store, const GcOptions& options, const Approved& approved, GcResult& result) {
    for (const auto& file : fs::directory_iterator(store.tmp_dir())) {
        if (!approved.allows(approved.temp, file.path())) continue;
        if (!older_than(file.path(), options.stale_after) || in_use(file.path())) continue;
        std::error_code ec;
        if (!options.dry_run) fs::remove_all(file.path(), ec);
        if (!ec) result.removed_temp.push_back(file.path());
    }
}

}  // namespace

PruneGcResult collect_garbage(Store& store, const PruneGcOptions& prune, const LeaseRemovalLock&, const LiveLeases& leased) {
    const GcOptions& options = prune.gc;
    return with_context("garbage collection", [&] {
        Marks marks{store, options.sweep_layers, {}, {}};
        for (const auto& entry : store.list_images())
            if (std::find(prune.ignore_names.begin(), prune.ignore_names.end(), entry.name) == prune.ignore_names.end())
                mark(marks, entry.descriptor);
        for (const auto& root : options.extra_roots) mark_root(marks, root);
        for (const auto& root : leased.blobs) mark_root(marks, root);

        PruneGcResult result;
        result.gc.removed_leases = leased.dead;
        const Approved approved(prune.approved);
        sweep_blobs(store, marks, options, approved, result.gc);
        if (options.sweep_layers) {
            const std::set<std::string> keep = kept_layers(marks, leased, options);
            sweep_layers(store, keep, options, approved, result.gc);
            for (const auto& dir : prune.layer_copy_dirs) sweep_layer_copies(store, dir, keep, options, approved, result);
        }
        if (!options.only_blobs) sweep_temp(store, options, approved, result.gc);
        return result;
    });
}

GcResult collect_garbage(Store& store, const GcOptions& options) {
    // Held from marking to the end of the sweep: a lease taken meanwhile would not be seen.
    LeaseRemovalLock held(store);
    LiveLeases leased = with_context("garbage collection", [&] {
        return read_live_leases(held, options.own_lease, options.dry_run);
    });
    return collect_garbage(store, PruneGcOptions{options, {}, {}}, held, leased).gc;
}

fs::path volumes_dir(const Store& store) { return store.root() / "volumes"; }

}  // namespace aishell::oci
