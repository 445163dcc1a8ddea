// What a failed build takes back, and the work dirs of its steps (build_engine.hpp).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "composer/build_step.hpp"
#include "oci/lease.hpp"
#include "oci/store.hpp"
#include "oci/types.hpp"
#include "runtime/idmap.hpp"

namespace aishell::composer {

// What a failed build takes back: exactly what it wrote, recorded as it was written -- the
// blobs and layer trees its lease names as made (by this process, the step helper and
// `__unpack`: oci/lease.hpp), its cache entries, its tags and the id mapping it recorded -- less
// what another command leases and the blobs an image or a cache entry references. Never a
// comparison of the store before and after: other commands write to it meanwhile, and a tree
// or blob that appeared is not this build's to remove (issue 10: an exec's layers vanished).
class Rollback {
public:
    // recorded_mapping: this build wrote the id mapping into meta.json (it was absent before);
    // meta_existed: meta.json existed before.
    Rollback(oci::Store& store, const runtime::IdMapping& mapping, std::shared_ptr<oci::Lease> lease,
             bool recorded_mapping, bool meta_existed)
        : store_(store), mapping_(mapping), lease_(std::move(lease)), recorded_mapping_(recorded_mapping),
          meta_existed_(meta_existed) {}
    Rollback(const Rollback&) = delete;
    Rollback& operator=(const Rollback&) = delete;
    // Undoes what was recorded unless commit() was called; warns, never throws.
    ~Rollback();

    // A cache entry this build wrote: removed only while it is still that file (another build
    // may have replaced it by one of its own since).
    void cache_entry(const std::string& path);
    // A tag this build set: put back (previous, or none) while it still names ours.
    void tagged(const std::string& name, std::optional<oci::Descriptor> previous, const oci::Descriptor& ours) {
        tags_.push_back({name, std::move(previous), ours});
    }
    // A file or (then empty) directory this build created outside the areas listed above.
    void added_path(const std::filesystem::path& path) { added_paths_.push_back(path); }
    void commit() { committed_ = true; }

private:
    struct FileId {
        std::string path;
        dev_t dev;
        ino_t ino;
    };
    struct Tag {
        std::string name;
        std::optional<oci::Descriptor> previous;
        oci::Descriptor ours;
    };

    void undo();
    void restore_tags();
    void remove_cache_entries();
    // The trees this build made that no other lease holds leave layers/ at once (renamed into
    // tmp/, with their owner tables removed), under the leases' removal lock; they are deleted
    // afterwards, outside every lock. others: how many other commands hold a lease.
    std::vector<std::filesystem::path> take_out_trees(const std::vector<oci::LeaseEntry>& made, std::size_t& others);
    // The blobs it made, unless an image, a cache entry or another command's lease still needs them.
    void remove_blobs(const std::vector<oci::LeaseEntry>& made);
    bool any_layer_tree() const;
    // The id mapping this build recorded, once nothing is unpacked for it and nobody else uses
    // the store: meta.json as it was.
    void forget_mapping();

    oci::Store& store_;
    runtime::IdMapping mapping_;
    std::shared_ptr<oci::Lease> lease_;
    bool recorded_mapping_, meta_existed_;
    std::vector<FileId> cache_entries_;
    std::vector<Tag> tags_;
    std::vector<std::filesystem::path> added_paths_;  // removed in this order
    bool committed_ = false;
};

// A step's work dir under tmp/, removed on destruction: by the step helper when it runs (inside
// the namespace, where a RUN's sub-id owned leftovers are removable, and after the engine has
// moved on), else here.
class WorkDir {
public:
    WorkDir(const oci::Store& store, StepHelper& helper);
    WorkDir(const WorkDir&) = delete;
    WorkDir& operator=(const WorkDir&) = delete;
    ~WorkDir();
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    StepHelper& helper_;
};

}  // namespace aishell::composer
