// What `aishell volumes prune` adds to garbage collection (store.hpp's collect_garbage): the
// copies of layer trees that runtime re-owns for keep-id (`layers-idmap-*`, swept by the rule
// that sweeps layers/), names to treat as gone (a dry run of a prune that untags them first),
// and a collection under the leases' removal lock that the caller already holds, so that it can
// decide more under the same lock (volumes, cache entries) before anything is swept.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "oci/lease.hpp"
#include "oci/store.hpp"

namespace aishell::oci {

struct PruneGcResult {
    GcResult gc;  // its layer_trash includes the copies taken out
    std::vector<fs::path> removed_layer_copies;
};

struct PruneGcOptions {
    GcOptions gc;
    // Directories whose entries named <diff_id hex> (and `.tmp-<hex>-*`, a copier's leftover)
    // are copies of layers/<hex>: swept with layers/ when gc.sweep_layers, by the same rule.
    std::vector<fs::path> layer_copy_dirs;
    // index.json names marked as if absent.
    std::vector<std::string> ignore_names;
    // What an earlier dry run listed and the user approved (`volumes prune` after its
    // question): only those blobs, trees, copies and temp files may go, and each only if it is
    // still garbage now. Something that became garbage while the question waited stays.
    const PruneGcResult* approved = nullptr;
};

// collect_garbage with those additions; `leased` is what read_live_leases(held) gave.
PruneGcResult collect_garbage(Store& store, const PruneGcOptions& options, const LeaseRemovalLock& held,
                              const LiveLeases& leased);

// The store's named volumes: <root>/volumes/<name>, names by Docker's rule (is_volume_name,
// store.hpp), which lease entries follow too.
fs::path volumes_dir(const Store& store);

}  // namespace aishell::oci
