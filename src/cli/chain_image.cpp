#include "cli/chain_image.hpp"

#include <filesystem>

#include "cli/progress.hpp"
#include "composer/chain.hpp"

namespace aishell::cli {

oci::ImageEntry project_image(oci::Store& store, const ChainRunOptions& options) {
    ChainSpinner spinner(PullProgress::detect_mode(options.quiet));
    composer::ChainOptions chain;
    chain.rebuild = options.rebuild;
    chain.progress = &spinner;
    // A FROM image the store lacks is pulled quietly (the spinner is the build's output).
    chain.pull = [](oci::Store& s, const std::string& ref) { return pull_for_build(s, ref, true); };
    auto image = composer::image_for_project(store, std::filesystem::current_path(), chain);
    return {image.name, image.manifest};
}

}  // namespace aishell::cli
