// What a failed build takes back (see build_rollback.hpp).
#include "composer/build_rollback.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "common/file.hpp"
#include "composer/step_cache.hpp"
#include "oci/owner_table.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::composer {

namespace fs = std::filesystem;

void Rollback::cache_entry(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) cache_entries_.push_back({path, st.st_dev, st.st_ino});
}

Rollback::~Rollback() {
    if (committed_) return;
    try {
        undo();
    } catch (const std::exception& e) {
        std::cerr << "aishell: warning: cleaning up after the failed build: " << e.what() << "\n";
    }
}

void Rollback::undo() {
    std::vector<fs::path> trash;
    {
        auto lock = store_.lock_exclusive();
        restore_tags();
        remove_cache_entries();
        for (const auto& p : added_paths_)
            if (::unlink(p.c_str()) != 0 && errno == EISDIR) ::rmdir(p.c_str());
        const std::vector<oci::LeaseEntry> made = lease_->entries();
        std::size_t others = 0;
        trash = take_out_trees(made, others);
        remove_blobs(made);
        if (recorded_mapping_ && others == 0 && !any_layer_tree()) forget_mapping();
    }
    for (const auto& t : trash) runtime::remove_tree(mapping_, t.string());
}

void Rollback::restore_tags() {
    for (auto it = tags_.rbegin(); it != tags_.rend(); ++it) {
        auto now = store_.find_image(it->name);
        if (!now || now->descriptor.digest != it->ours.digest) continue;  // retagged by someone else
        if (it->previous) store_.tag_image(it->name, *it->previous);
        else store_.untag_image(it->name);
    }
}

void Rollback::remove_cache_entries() {
    for (const auto& e : cache_entries_) {
        struct stat st {};
        if (::lstat(e.path.c_str(), &st) == 0 && st.st_dev == e.dev && st.st_ino == e.ino) ::unlink(e.path.c_str());
    }
}

std::vector<fs::path> Rollback::take_out_trees(const std::vector<oci::LeaseEntry>& made, std::size_t& others) {
    oci::LeaseRemovalLock held(store_);
    const oci::LiveLeases leased = oci::read_live_leases(held, lease_->path());
    others = leased.holders;
    std::vector<fs::path> trash;
    for (const auto& e : made) {
        if (!e.made || e.kind != oci::LeaseKind::Layer || leased.layers.count(e.name)) continue;
        const fs::path tree = store_.layers_dir() / e.name;
        const fs::path to = store_.tmp_dir() / ("rollback-" + e.name.substr(0, 12) + "-" + random_hex(8));
        if (::rename(tree.c_str(), to.c_str()) == 0) trash.push_back(to);
        else if (errno != ENOENT)  // e.g. EACCES: a tree whose root its own RUN made 0555
            std::cerr << "aishell: warning: cleaning up after the failed build: move " << tree.string() << " to "
                      << to.string() << ": " << std::strerror(errno) << "\n";
        ::unlink(oci::layer_owner_table_path(store_.layers_dir(), e.name).c_str());
    }
    return trash;
}

void Rollback::remove_blobs(const std::vector<oci::LeaseEntry>& made) {
    oci::GcOptions gc;
    gc.only_blobs.emplace();
    for (const auto& e : made)
        if (e.made && e.kind == oci::LeaseKind::Blob) gc.only_blobs->push_back(oci::Digest::parse(e.name));
    if (gc.only_blobs->empty()) return;
    gc.extra_roots = step_cache_roots(store_);
    gc.own_lease = lease_->path();
    oci::collect_garbage(store_, gc);
}

bool Rollback::any_layer_tree() const {
    std::error_code ec;
    for (fs::directory_iterator it(store_.layers_dir(), ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory(ec)) return true;
    return false;
}

void Rollback::forget_mapping() {
    store_.erase_meta("idmap");
    const fs::path meta = store_.root() / "meta.json";
    if (!meta_existed_ && read_file_if_exists(meta, 1 << 20).value_or("{}\n") == "{}\n") ::unlink(meta.c_str());
}

WorkDir::WorkDir(const oci::Store& store, StepHelper& helper)
    : path_(store.tmp_dir() / ("build-" + random_hex(12))), helper_(helper) {
    make_dirs(path_, 0700);
}

WorkDir::~WorkDir() {
    try {
        helper_.remove(path_);
    } catch (const std::exception& e) {
        std::cerr << "aishell: warning: " << e.what() << "\n";
    }
}

}  // namespace aishell::composer
