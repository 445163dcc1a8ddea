// Cleaning the store (`aishell volumes prune`, `volumes rm`): what may go is decided under the
// store lock and the leases' removal lock (oci/lease.hpp), so nothing a running container or
// build holds is taken, and then taken out in one pass:
//   1. orphaned chain images (the chain's record, chain.hpp), unless a live lease holds them;
//   2. build step-cache entries whose layer no remaining image has and no live lease holds
//      (entries without a layer hold no data and stay);
//   3. named volumes, only when asked (they hold user data; Docker 23+ keeps them too), unless
//      leased;
//   4. garbage collection (oci::collect_garbage) with layer trees, the re-owned keep-id copies
//      (runtime/reown.hpp) and stale temp files.
// Trees leave the store by rename under the locks and are deleted afterwards, inside the user
// namespace when sub ids own their files (runtime::remove_tree).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "oci/digest.hpp"
#include "oci/gc.hpp"
#include "oci/store.hpp"
#include "runtime/idmap.hpp"

namespace aishell::composer {

namespace fs = std::filesystem;

struct PruneReport;

struct PruneOptions {
    bool volumes = false;  // also named volumes no live run holds
    bool dry_run = false;  // decide and measure, change nothing
    // The plan a dry run listed and the user approved: only what it lists goes (and of that,
    // only what is still unused now). Without it, a volume listed as "Kept: in use" whose run
    // ended while the question waited would be removed unseen.
    const PruneReport* approved = nullptr;
};

struct PrunedImage {
    std::string name;
    oci::Digest digest;
    std::string why;  // "custom base no longer current", "project /src/x is gone", ...
};

struct PrunedVolume {
    std::string name;
    std::uint64_t bytes = 0;
};

struct PruneReport {
    std::vector<PrunedImage> images;          // names taken out of index.json
    std::vector<std::string> images_in_use;   // orphans a live lease holds: kept this time
    std::vector<PrunedVolume> volumes;
    std::vector<std::string> volumes_in_use;  // with --volumes: held by a live run, kept
    std::vector<std::string> cache_entries;   // step-cache entry files
    oci::PruneGcResult gc;                    // blobs, layer trees and copies, temp files
    std::uint64_t blob_bytes = 0, tree_bytes = 0, temp_bytes = 0, volume_bytes = 0;
    std::uint64_t bytes() const { return blob_bytes + tree_bytes + temp_bytes + volume_bytes; }
    bool empty() const;
};

// Does (or with dry_run, plans) the prune. Sizes are measured before anything goes, so a dry
// run and the prune that follows report the same figures for the same store.
PruneReport prune_store(oci::Store& store, const PruneOptions& options);

// `aishell volumes rm NAME`: refuses a volume a live run holds (as `docker volume rm` refuses
// one a container uses) and a missing one. Returns the bytes freed.
std::uint64_t remove_volume(oci::Store& store, const std::string& name);

// The mapping under which the store's files were made: the recorded one ("idmap" in
// meta.json), else the one this caller would use. Never records anything.
runtime::IdMapping removal_mapping(const oci::Store& store);

}  // namespace aishell::composer
