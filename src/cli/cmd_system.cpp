// `aishell system reset [--yes] [--force]`: removes the whole store, as `podman system reset`
// removes its storage: the images, layer trees (files owned by sub ids included: they are
// removed inside the store's user namespace, as a run's upper dir is), build cache, named
// volumes and the store's user namespace holder. ~/.aishell (the user's Dockerfile, registry
// CAs) and credentials are not the store's and stay.
//
// podman stops and removes its running containers first; aishell keeps no list of its
// containers it could stop, only their leases. Removing the layer trees under a running
// container would pull its root filesystem from under it, so a store that a live lease holds
// is refused unless --force says to go ahead anyway.
#include <sys/stat.h>
#include <unistd.h>

#include <iostream>

#include "cli/command.hpp"
#include "cli/store_commands.hpp"
#include "cli/confirm.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "composer/prune.hpp"
#include "oci/lease.hpp"
#include "runtime/userns_exec.hpp"
#include "runtime/userns_holder.hpp"

namespace aishell::cli {

namespace {

namespace fs = std::filesystem;

struct ResetOptions {
    bool yes = false;
    bool force = false;
};

// Only a directory that is an aishell store is removed: --store pointed at $HOME by mistake
// must not empty it.
void require_store(const fs::path& root) {
    struct stat st {};
    if (::lstat(root.c_str(), &st) != 0) throw_errno("stat", root.string());
    if (!S_ISDIR(st.st_mode)) throw Error(root.string() + " is not a directory");
    if (st.st_uid != ::geteuid()) throw Error(root.string() + " belongs to uid " + std::to_string(st.st_uid) + ", not to you");
    if (!fs::exists(root / "oci" / "oci-layout") || !fs::exists(root / "version"))
        throw Error(root.string() + " does not look like an aishell store (no oci/oci-layout or version)",
                    "check --store or AISHELL_STORE");
}

// Moves the store aside (a sibling dot-name, same filesystem) so that a command started
// meanwhile makes a fresh one instead of writing into what is being deleted; in place when the
// parent cannot take it (a mount point).
fs::path move_aside(const fs::path& root) {
    const fs::path aside = root.parent_path() / ("." + root.filename().string() + ".reset-" + random_hex(8));
    if (::rename(root.c_str(), aside.c_str()) == 0) return aside;
    return root;
}

int run_reset(const CommandContext& ctx, const ResetOptions& o) {
    const fs::path root = store_root(ctx.global);
    if (!fs::exists(fs::symlink_status(root))) {
        std::cout << "No store at " << root.string() << ": nothing to reset.\n";
        return 0;
    }
    require_store(root);
    std::cout << "This removes the aishell store at " << root.string()
              << ": every image, layer tree, build cache entry and named volume.\n"
              << std::flush;
    if (!o.yes && !confirm("Remove it?", "pass --yes to remove the store")) {
        std::cout << "Nothing removed.\n";
        return 1;
    }
    oci::Store store = open_store(ctx.global);
    const runtime::IdMapping mapping = composer::removal_mapping(store);
    fs::path doomed;
    {
        auto lock = store.lock_exclusive();
        oci::LeaseRemovalLock held(store);
        const oci::LiveLeases leased = oci::read_live_leases(held);
        if (leased.holders > 0 && !o.force)
            throw Error(std::to_string(leased.holders) + " running aishell command(s) (containers or builds) use this store",
                        "wait for them to end, or pass --force to remove it from under them");
        const int holders = runtime::stop_userns_holders(store.tmp_dir());
        if (holders > 0) std::cout << "Stopped the store's user namespace holder.\n";
        doomed = move_aside(root);
    }
    runtime::remove_tree(mapping, doomed.string());
    std::cout << "Removed " << root.string() << "\n";
    return 0;
}

}  // namespace

void add_system_command(CLI::App& app, CommandContext& ctx) {
    auto* system = add_command_group(app, "system", "Manage the store as a whole");
    auto [reset, o] = add_command<ResetOptions>(*system, ctx, "reset",
                                                "Remove the whole store (images, layers, cache, volumes)", run_reset);
    reset->add_flag("-y,--yes", o->yes, "Do not ask");
    reset->add_flag("-f,--force", o->force, "Remove it even while running containers or builds use it");
}

}  // namespace aishell::cli
