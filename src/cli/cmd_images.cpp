// `aishell images [--json]`: the images named in the store's index.json, each with its tier in
// the three-tier chain.
#include <cstdio>
#include <ctime>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "cli/format.hpp"
#include "common/error.hpp"
#include "composer/chain_record.hpp"
#include "oci/image.hpp"
#include "oci/json_text.hpp"

namespace aishell::cli {

namespace {

struct ImagesOptions {
    bool json = false;
};

// Which tier an image is, from the chain's record and the index names, never from labels
// (composer::image_tier): foundation, base (custom or the foundation's alias), ext with its
// project, or other.
void add_tier(nlohmann::json& row, const composer::ChainRecord& record, const oci::ImageEntry& entry) {
    const composer::ImageTier tier = composer::image_tier(record, entry);
    row["tier"] = std::string(composer::tier_name(tier.tier));
    if (tier.tier == composer::Tier::Base) row["custom"] = tier.custom;
    if (tier.tier == composer::Tier::Ext) row["project"] = tier.project;
}

std::string tier_text(const nlohmann::json& row) {
    std::string tier = row["tier"];
    if (row.contains("custom")) tier += row["custom"].get<bool>() ? " (custom)" : " (foundation alias)";
    if (row.contains("project")) tier += " " + row["project"].get<std::string>();
    return tier;
}

nlohmann::json image_json(const oci::Image& image) {
    auto [repository, tag] = oci::split_repository_tag(image.name);
    return {
        {"name", image.name},
        {"repository", repository},
        {"tag", tag},
        {"id", image.config_digest.str()},
        {"digest", image.manifest_descriptor.digest.str()},
        {"mediaType", image.manifest_descriptor.media_type},
        {"created", image.config.json().value("created", "")},
        {"size", image.size()},
    };
}

// An image that does not load (a pull before pulls checked configs, a damaged store) is listed
// as broken with the reason, so one bad entry does not hide the others.
nlohmann::json broken_image_json(const oci::ImageEntry& entry, const Error& why) {
    auto [repository, tag] = oci::split_repository_tag(entry.name);
    return {
        {"name", entry.name},
        {"repository", repository},
        {"tag", tag},
        {"digest", entry.descriptor.digest.str()},
        {"mediaType", entry.descriptor.media_type},
        {"broken", why.message()},
    };
}

int run_images(const CommandContext& ctx, const ImagesOptions& options) {
    oci::Store store = open_store(ctx.global);
    nlohmann::json rows = nlohmann::json::array();
    const composer::ChainRecord record = composer::read_chain_record(store);
    for (const auto& entry : store.list_images()) {
        try {
            rows.push_back(image_json(oci::load_image(store, entry)));
        } catch (const Error& e) {
            std::cerr << "aishell: warning: " << e.message() << " (hint: pull or build it again under that name)\n";
            rows.push_back(broken_image_json(entry, e));
        }
        add_tier(rows.back(), record, entry);
    }
    if (options.json) {
        std::cout << oci::json_document(rows, 2) << '\n';
        return 0;
    }
    Table table({"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "TIER"});
    for (const auto& row : rows) {
        if (row.contains("broken")) {
            table.add({row["repository"], row["tag"], "<broken>", "", "", tier_text(row)});
            continue;
        }
        std::string id = row["id"].get<std::string>();
        table.add({row["repository"], row["tag"], id.substr(id.find(':') + 1, 12),
                   human_age(row["created"].get<std::string>()), human_size(row["size"].get<std::int64_t>()),
                   tier_text(row)});
    }
    std::cout << table.render();
    return 0;
}

}  // namespace

void add_images_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, options] = add_command<ImagesOptions>(app, ctx, "images", "List the images in the store", run_images);
    cmd->add_flag("--json", options->json, "Print JSON");
}

}  // namespace aishell::cli
