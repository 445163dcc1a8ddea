// `aishell inspect NAME`: what an image is made of — manifest digest, config, layers, sizes —
// as JSON, in the spirit of `podman image inspect`.
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "cli/image_lookup.hpp"
#include "common/error.hpp"
#include "oci/image.hpp"
#include "oci/json_text.hpp"

namespace aishell::cli {

namespace {

nlohmann::json layers_json(const oci::Image& image) {
    nlohmann::json layers = nlohmann::json::array();
    auto diff_ids = image.config.diff_ids();
    for (std::size_t i = 0; i < image.manifest.layers.size(); ++i) {
        const auto& layer = image.manifest.layers[i];
        layers.push_back({{"digest", layer.digest.str()},
                          {"diffID", diff_ids.at(i).str()},
                          {"mediaType", layer.media_type},
                          {"size", layer.size}});
    }
    return layers;
}

nlohmann::json inspect_json(const oci::Image& image) {
    const auto& config = image.config.json();
    auto platform = image.config.platform();
    return {
        {"Name", image.name},
        {"Id", image.config_digest.str()},
        {"Digest", image.manifest_descriptor.digest.str()},
        {"ManifestMediaType", image.manifest_descriptor.media_type},
        {"ManifestSize", image.manifest_descriptor.size},
        {"Created", config.value("created", "")},
        {"Author", config.value("author", "")},
        {"Os", platform.os},
        {"Architecture", platform.architecture},
        {"Variant", platform.variant},
        {"Config", config.value("config", nlohmann::json::object())},
        {"ConfigSize", image.manifest.config.size},
        {"Layers", layers_json(image)},
        {"Size", image.size()},
        {"History", config.value("history", nlohmann::json::array())},
        {"Annotations", image.manifest.annotations},
    };
}

int run_inspect(const CommandContext& ctx, const std::string& name) {
    oci::Store store = open_store(ctx.global);
    oci::ImageEntry entry = require_local_image(store, name);
    std::cout << oci::json_document(inspect_json(oci::load_image(store, entry)), 4) << '\n';
    return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, name] = add_command<std::string>(
        app, ctx, "inspect", "Show an image's manifest digest, config, layers and sizes", run_inspect);
    cmd->add_option("NAME", *name, "Image name in the store")->required();
}

}  // namespace aishell::cli
