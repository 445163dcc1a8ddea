// Pruning the store (see prune.hpp).
#include "composer/prune.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <set>

#include "common/error.hpp"
#include "common/disk_usage.hpp"
#include "common/file.hpp"
#include "composer/chain_record.hpp"
#include "composer/step_cache_scan.hpp"
#include "oci/image.hpp"
#include "oci/lease.hpp"
#include "runtime/reown.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::composer {

namespace {

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

bool approved_image(const PruneOptions& o, const ChainOrphan& orphan) {
    if (!o.approved) return true;
    return std::any_of(o.approved->images.begin(), o.approved->images.end(),
                       [&](const PrunedImage& i) { return i.name == orphan.name && i.digest == orphan.manifest; });
}

bool approved_volume(const PruneOptions& o, const std::string& name) {
    if (!o.approved) return true;
    return std::any_of(o.approved->volumes.begin(), o.approved->volumes.end(),
                       [&](const PrunedVolume& v) { return v.name == name; });
}

// Diff_ids (hex) of every image that stays: the cache entries of their layers are kept.
std::set<std::string> layers_of_remaining_images(const oci::Store& store, const std::vector<std::string>& going) {
    std::set<std::string> layers;
    for (const auto& entry : store.list_images()) {
        if (contains(going, entry.name)) continue;
        oci::Image image = with_context("image " + entry.name, [&] { return oci::load_image(store, entry); });
        for (const auto& d : image.config.diff_ids())
            if (d.is_sha256()) layers.insert(std::string(d.encoded()));
    }
    return layers;
}

struct CacheDecision {
    std::vector<std::string> remove;  // entry files
    std::vector<oci::Digest> roots, layer_roots;  // what the kept ones name
};

// A cache entry is needed while an image that stays has its layer or a live lease (a build
// still running, whose image is not tagged yet) holds its blob.
// approved: the entries an approved plan lists (others stay, their layers with them); null: any.
CacheDecision decide_cache(const oci::Store& store, const std::set<std::string>& image_layers, const oci::LiveLeases& leased,
                           const std::vector<std::string>* approved) {
    CacheDecision d;
    for (auto& [path, entry] : step_cache_entries(store)) {
        if (entry && !entry->layer) continue;  // no layer, no data: a few bytes worth keeping
        const bool may_go = !approved || contains(*approved, path);
        if (entry && (!may_go || image_layers.count(std::string(entry->layer->diff_id.encoded())) ||
                      leased.blobs.count(entry->layer->descriptor.digest))) {
            d.roots.push_back(entry->layer->descriptor.digest);
            d.layer_roots.push_back(entry->layer->diff_id);
            continue;
        }
        if (may_go) d.remove.push_back(path);  // its layer is in no image, or it does not parse
    }
    return d;
}

std::vector<std::string> volume_names(const oci::Store& store) {
    std::vector<std::string> names;
    std::error_code ec;
    for (fs::directory_iterator it(oci::volumes_dir(store), ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (oci::is_volume_name(name) && it->is_directory(ec)) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
}

// Takes a volume out of volumes/ at once (the caller holds the removal lock): a run that
// leases it afterwards finds it gone and makes a new one.
fs::path take_out_volume(const oci::Store& store, const std::string& name) {
    const fs::path from = oci::volumes_dir(store) / name, to = store.tmp_dir() / ("gc-volume-" + name + "-" + random_hex(8));
    if (::rename(from.c_str(), to.c_str()) != 0) throw_errno("move volume " + from.string() + " to", to.string());
    return to;
}

std::uint64_t file_bytes(const fs::path& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
}

// What the collection would take, measured while it is still there (blobs by their size, as
// docker reports them; trees and temp files by the blocks they use).
void measure(const oci::Store& store, const oci::PruneGcResult& result, PruneReport& r) {
    const oci::GcResult& gc = result.gc;
    r.blob_bytes = gc.removed_bytes;
    for (const auto& hex : gc.removed_layers) r.tree_bytes += disk_usage(store.layers_dir() / hex);
    for (const auto& copy : result.removed_layer_copies) r.tree_bytes += disk_usage(copy);
    for (const auto& t : gc.removed_temp) r.temp_bytes += disk_usage(t);
    for (const auto& c : r.cache_entries) r.temp_bytes += file_bytes(c);
}

void remove_trash(const runtime::IdMapping& mapping, const std::vector<fs::path>& trash) {
    for (const auto& t : trash) {
        try {
            runtime::remove_tree(mapping, t.string());
        } catch (const Error& e) {
            // Left in tmp/, where the next collection finds it again.
            std::cerr << "aishell: warning: " << e.message() << "\n";
        }
    }
}

}  // namespace

bool PruneReport::empty() const {
    return images.empty() && volumes.empty() && cache_entries.empty() && gc.gc.removed_blobs.empty() &&
           gc.gc.removed_layers.empty() && gc.removed_layer_copies.empty() && gc.gc.removed_temp.empty();
}

runtime::IdMapping removal_mapping(const oci::Store& store) {
    if (auto recorded = store.get_meta("idmap")) return runtime::IdMapping::parse(*recorded);
    return runtime::choose_mapping(runtime::probe_host(), false);
}

PruneReport prune_store(oci::Store& store, const PruneOptions& options) {
    PruneReport r;
    const runtime::IdMapping mapping = removal_mapping(store);
    std::vector<fs::path> trash;
    {
        auto lock = store.lock_exclusive();
        oci::LeaseRemovalLock held(store);
        const oci::LiveLeases leased = oci::read_live_leases(held, {}, options.dry_run);

        ChainRecord record = read_chain_record(store);
        std::vector<ChainOrphan> orphans;
        for (auto& orphan : chain_orphans(record, store.list_images())) {
            if (leased.blobs.count(orphan.manifest)) {
                r.images_in_use.push_back(orphan.name);
                continue;
            }
            if (!approved_image(options, orphan)) continue;  // not listed when the user said yes
            r.images.push_back({orphan.name, orphan.manifest, orphan.reason});
            orphans.push_back(std::move(orphan));
        }
        std::vector<std::string> going;
        for (const auto& image : r.images) going.push_back(image.name);

        const CacheDecision cache = decide_cache(store, layers_of_remaining_images(store, going), leased,
                                                 options.approved ? &options.approved->cache_entries : nullptr);
        r.cache_entries = cache.remove;

        for (const auto& name : options.volumes ? volume_names(store) : std::vector<std::string>{}) {
            if (leased.volumes.count(name)) r.volumes_in_use.push_back(name);
            else if (approved_volume(options, name)) r.volumes.push_back({name, disk_usage(oci::volumes_dir(store) / name)});
        }
        for (const auto& v : r.volumes) r.volume_bytes += v.bytes;

        oci::PruneGcOptions gc;
        gc.gc.dry_run = true;
        gc.gc.sweep_layers = true;
        gc.gc.extra_roots = cache.roots;
        gc.gc.extra_layer_roots = cache.layer_roots;
        gc.layer_copy_dirs = runtime::reowned_layers_dirs(store.root());
        gc.ignore_names = going;
        if (options.approved) gc.approved = &options.approved->gc;
        r.gc = oci::collect_garbage(store, gc, held, leased);
        measure(store, r.gc, r);
        if (options.dry_run) return r;

        // The names first, then the record (chain_record.hpp: a name the record no longer
        // vouches for is only ever rebuilt).
        for (const auto& image : r.images) store.untag_image(image.name);
        bool forgot = false;
        for (const auto& orphan : orphans)
            if (!orphan.project.empty()) forgot |= forget_ext(record, orphan.project);
        if (forgot) write_chain_record(store, lock, record);
        for (const auto& path : r.cache_entries) ::unlink(path.c_str());
        for (const auto& v : r.volumes) trash.push_back(take_out_volume(store, v.name));
        gc.gc.dry_run = false;
        r.gc = oci::collect_garbage(store, gc, held, leased);
        trash.insert(trash.end(), r.gc.gc.layer_trash.begin(), r.gc.gc.layer_trash.end());
    }
    remove_trash(mapping, trash);
    return r;
}

std::uint64_t remove_volume(oci::Store& store, const std::string& name) {
    if (!oci::is_volume_name(name))
        throw Error("'" + name + "' is not a volume name", "names match [a-zA-Z0-9][a-zA-Z0-9_.-]*");
    const runtime::IdMapping mapping = removal_mapping(store);
    fs::path trash;
    std::uint64_t bytes = 0;
    {
        auto lock = store.lock_exclusive();
        oci::LeaseRemovalLock held(store);
        struct stat st {};
        if (::lstat((oci::volumes_dir(store) / name).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
            throw Error("no such volume: " + name, "aishell volumes ls lists them");
        if (oci::read_live_leases(held).volumes.count(name))
            throw Error("volume " + name + " is in use by a running container", "remove it once the container has ended");
        bytes = disk_usage(oci::volumes_dir(store) / name);
        trash = take_out_volume(store, name);
    }
    remove_trash(mapping, {trash});
    return bytes;
}

}  // namespace aishell::composer
