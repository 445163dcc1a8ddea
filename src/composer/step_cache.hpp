// The build step cache under <store>/cache: one small JSON file per step key, naming what the
// step produced (its layer, or none) and when it was first made (the history date, so a
// cached rebuild gives the same config and so the same image digest). A step's key chains its
// parent's key with the instruction after expansion, the build args it sees, the digest of the
// files it copies and the store's id mapping (layer trees are owned for one mapping). Entries
// survive restarts; their layer blobs are GC roots (step_cache_roots) until pruned.
//
// Entries are replaced by rename but not fsynced (two fsyncs cost 4-7 ms on the development
// disk, per step, see docs/performance.md): the cache is an optimisation, not store state. After
// a crash an entry is the old one, the new one, or an empty or partial file (ext4 without
// fsync), and get() treats whatever does not parse as a miss. The layer blob an entry names is
// durable before the entry is written (the build step commits it with fsyncs), so an entry that
// did survive never names a blob that did not.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "composer/build_step.hpp"
#include "oci/digest.hpp"
#include "oci/store.hpp"

namespace aishell::composer {

struct CacheEntry {
    std::string created;              // RFC 3339 history date
    std::optional<StepLayer> layer;   // none: the step added no layer
};

// Chains parent with the parts that decide a step's result, each length-prefixed so no two
// different part lists give the same bytes.
oci::Digest step_key(const oci::Digest& parent, const std::vector<std::string>& parts);

class StepCache {
public:
    explicit StepCache(const oci::Store& store) : store_(store) {}
    // The entry for key; a miss when absent, unreadable, or its layer blob is gone.
    std::optional<CacheEntry> get(const oci::Digest& key) const;
    // Writes the entry for key (temp file + rename: readers see the old or the new entry; no
    // fsync, see above); returns its path.
    std::string put(const oci::Digest& key, const CacheEntry& entry) const;
    std::string path_for(const oci::Digest& key) const;

private:
    const oci::Store& store_;
};

// Layer blobs the cache refers to: extra GC roots (oci::GcOptions::extra_roots).
std::vector<oci::Digest> step_cache_roots(const oci::Store& store);

}  // namespace aishell::composer
