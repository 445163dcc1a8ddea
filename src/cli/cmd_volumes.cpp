// `aishell volumes ls|rm NAME|prune`: the store's named volumes, and cleaning the store
// (composer/prune.hpp decides what goes; this file lists it, asks and reports).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "cli/store_commands.hpp"
#include "cli/confirm.hpp"
#include "cli/format.hpp"
#include "common/error.hpp"
#include "common/disk_usage.hpp"
#include "composer/prune.hpp"
#include "oci/json_text.hpp"
#include "oci/gc.hpp"
#include "oci/lease.hpp"

namespace aishell::cli {

namespace {

namespace fs = std::filesystem;

struct VolumesOptions {
    bool json = false;
    std::string name;
    bool volumes = false, yes = false, dry_run = false;
};

int run_volumes_ls(const CommandContext& ctx, const VolumesOptions& o) {
    oci::Store store = open_store(ctx.global);
    std::set<std::string> in_use;
    {
        oci::LeaseRemovalLock held(store);
        in_use = oci::read_live_leases(held, {}, /*keep_dead=*/true).volumes;
    }
    nlohmann::json rows = nlohmann::json::array();
    std::error_code ec;
    std::vector<std::string> names;
    for (fs::directory_iterator it(oci::volumes_dir(store), ec), end; !ec && it != end; it.increment(ec))
        if (oci::is_volume_name(it->path().filename().string()) && it->is_directory(ec)) names.push_back(it->path().filename());
    std::sort(names.begin(), names.end());
    for (const auto& name : names)
        rows.push_back({{"name", name},
                        {"path", (oci::volumes_dir(store) / name).string()},
                        {"size", disk_usage(oci::volumes_dir(store) / name)},
                        {"inUse", in_use.count(name) > 0}});
    if (o.json) {
        std::cout << oci::json_document(rows, 2) << '\n';
        return 0;
    }
    Table table({"VOLUME NAME", "SIZE", "IN USE"});
    for (const auto& row : rows)
        table.add({row["name"], human_size(row["size"].get<std::int64_t>()), row["inUse"].get<bool>() ? "yes" : "no"});
    std::cout << table.render();
    return 0;
}

int run_volumes_rm(const CommandContext& ctx, const VolumesOptions& o) {
    oci::Store store = open_store(ctx.global);
    composer::remove_volume(store, o.name);
    std::cout << o.name << "\n";
    return 0;
}

std::string plural(std::size_t n, const std::string& one, const std::string& many) {
    return std::to_string(n) + " " + (n == 1 ? one : many);
}

void print_plan(const composer::PruneReport& r, std::ostream& out) {
    for (const auto& image : r.images) out << "  image " << image.name << " (" << image.why << ")\n";
    for (const auto& v : r.volumes) out << "  volume " << v.name << " (" << human_size(static_cast<std::int64_t>(v.bytes)) << ")\n";
    if (!r.gc.gc.removed_blobs.empty())
        out << "  " << plural(r.gc.gc.removed_blobs.size(), "blob", "blobs") << " no image uses ("
            << human_size(static_cast<std::int64_t>(r.blob_bytes)) << ")\n";
    const std::size_t trees = r.gc.gc.removed_layers.size() + r.gc.removed_layer_copies.size();
    if (trees)
        out << "  " << plural(trees, "unpacked layer tree", "unpacked layer trees") << " no image uses ("
            << human_size(static_cast<std::int64_t>(r.tree_bytes)) << ")\n";
    if (!r.cache_entries.empty())
        out << "  " << plural(r.cache_entries.size(), "build cache entry", "build cache entries") << " no image needs\n";
    if (!r.gc.gc.removed_temp.empty())
        out << "  " << plural(r.gc.gc.removed_temp.size(), "stale temporary file", "stale temporary files") << "\n";
    for (const auto& name : r.images_in_use) out << "Kept: image " << name << " is in use by a running container or build\n";
    for (const auto& name : r.volumes_in_use) out << "Kept: volume " << name << " is in use by a running container\n";
}

int run_volumes_prune(const CommandContext& ctx, const VolumesOptions& o) {
    oci::Store store = open_store(ctx.global);
    composer::PruneOptions options{.volumes = o.volumes, .dry_run = true};
    composer::PruneReport plan = composer::prune_store(store, options);
    if (plan.empty()) {
        print_plan(plan, std::cout);
        std::cout << "Nothing to remove.\n";
        return 0;
    }
    std::cout << (o.dry_run ? "Would remove:\n" : "Will remove:\n");
    print_plan(plan, std::cout);
    if (o.dry_run) {
        std::cout << "Would reclaim: " << human_size(static_cast<std::int64_t>(plan.bytes())) << "\n";
        return 0;
    }
    std::cout << std::flush;
    if (!o.yes && !confirm("Remove them?", "pass --yes to remove them, or --dry-run to only list them")) {
        std::cout << "Nothing removed.\n";
        return 1;
    }
    options.dry_run = false;
    options.approved = &plan;  // only what was listed and approved, of it what is still unused
    composer::PruneReport done = composer::prune_store(store, options);
    std::cout << "Total reclaimed space: " << human_size(static_cast<std::int64_t>(done.bytes())) << "\n";
    return 0;
}

}  // namespace

void add_volumes_command(CLI::App& app, CommandContext& ctx) {
    auto* volumes = add_command_group(app, "volumes", "Named volumes, and cleaning up the store");

    auto [ls, listed] = add_command<VolumesOptions>(*volumes, ctx, "ls", "List named volumes", run_volumes_ls);
    ls->add_flag("--json", listed->json, "Print JSON");

    auto [rm, removed] = add_command<VolumesOptions>(*volumes, ctx, "rm", "Remove a named volume", run_volumes_rm);
    rm->add_option("NAME", removed->name, "Volume name")->required();

    auto [prune, pruned] = add_command<VolumesOptions>(
        *volumes, ctx, "prune",
        "Remove orphaned chain images, unused blobs, layer trees, build cache entries and stale temp files",
        run_volumes_prune);
    prune->add_flag("--volumes", pruned->volumes, "Also remove named volumes no running container uses");
    prune->add_flag("-y,--yes", pruned->yes, "Do not ask");
    prune->add_flag("--dry-run", pruned->dry_run, "Only list what would be removed");
}

}  // namespace aishell::cli
