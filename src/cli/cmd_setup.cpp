// `aishell setup [--force] [--foundation REF]`: pulls the foundation image, names it
// aishell:foundation, remembers its reference in the store, and hands the rest to the chain
// (composer/chain.hpp): without ~/.aishell/Dockerfile aishell:base becomes the foundation's
// alias; a custom base is built by the next run. Plain setup never re-pulls a foundation that is
// present under the same reference and never builds; --force pulls again, builds a custom base
// at once without the step cache, and marks every project's image stale.
#include <chrono>
#include <iostream>

#include "cli/command.hpp"
#include "cli/progress.hpp"
#include "cli/pull_runner.hpp"
#include "cli/store_commands.hpp"
#include "common/error.hpp"
#include "composer/build_config.hpp"
#include "composer/chain.hpp"
#include "composer/chain_names.hpp"
#include "registry/reference.hpp"

namespace aishell::cli {

namespace {

constexpr const char* kDefaultFoundation = "docker.io/library/debian:bookworm-slim";

struct SetupOptions {
    std::string foundation;  // --foundation or $AISHELL_FOUNDATION
    bool force = false;
    bool quiet = false;
    bool tls_verify = true;
    std::string mirror;
};

// The reference to set up: the flag or $AISHELL_FOUNDATION, else the one remembered from
// the last setup (so `setup --force` re-pulls what was chosen then), else Debian's slim image.
std::string choose_foundation(const oci::Store& store, const SetupOptions& o) {
    if (!o.foundation.empty()) return o.foundation;
    if (auto remembered = store.get_meta(kFoundationReferenceMeta)) return *remembered;
    return kDefaultFoundation;
}

int run_setup(const CommandContext& ctx, const SetupOptions& o) {
    oci::Store store = open_store(ctx.global);
    registry::Reference ref = with_context("foundation", [&] {
        return registry::Reference::parse(choose_foundation(store, o));
    });
    auto present = store.find_image(composer::kFoundationImage);
    bool same_reference = store.get_meta(kFoundationReferenceMeta) == ref.str();

    oci::Descriptor manifest;
    const bool pull = o.force || !present || !same_reference;
    if (pull) {
        PullSettings settings;
        settings.quiet = o.quiet;
        settings.tls_verify = o.tls_verify;
        settings.mirror = o.mirror;
        manifest = pull_with_progress(ctx, store, ref, settings).manifest;
    } else {
        manifest = present->descriptor;
    }

    {
        oci::StoreLock lock = store.lock_exclusive();
        store.tag_image(composer::kFoundationImage, manifest);
        store.set_meta(kFoundationReferenceMeta, ref.str());
        if (pull) {
            // check's pull date. Not the manifest blob's mtime: a re-pull that finds the same
            // manifest writes no blob.
            const auto now = std::chrono::system_clock::now().time_since_epoch();
            store.set_meta(kFoundationPulledMeta,
                           composer::rfc3339(std::chrono::duration_cast<std::chrono::seconds>(now).count()));
        }
    }
    ChainSpinner spinner(PullProgress::detect_mode(o.quiet));
    composer::ChainOptions chain;
    chain.progress = &spinner;
    chain.pull = [](oci::Store& s, const std::string& r) { return pull_for_build(s, r, true); };
    bool custom_base = composer::setup_chain(store, o.force, chain).custom_base;

    if (!o.quiet) {
        std::cout << "Foundation: " << ref.str() << " (" << manifest.digest.str() << ")\n"
                  << (custom_base ? "Base image: custom (~/.aishell/Dockerfile)\n"
                                  : "Base image: default (foundation alias)\n");
    }
    return 0;
}

}  // namespace

void add_setup_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, o] = add_command<SetupOptions>(
        app, ctx, "setup", "Pull the foundation image and name aishell:foundation and aishell:base", run_setup);
    cmd->add_option("--foundation", o->foundation,
                    std::string("Foundation image reference (default ") + kDefaultFoundation +
                        ", or the one from the last setup)")
        ->envname("AISHELL_FOUNDATION");
    cmd->add_flag("--force", o->force,
                  "Pull the foundation again even when it is present, rebuild a custom base "
                  "(~/.aishell/Dockerfile) now and every project's image on its next run, all without the step cache");
    cmd->add_flag("-q,--quiet", o->quiet, "Print nothing");
    add_tls_verify_flag(*cmd, o->tls_verify);
    cmd->add_option("--registry-mirror", o->mirror, "Mirror for Docker Hub, tried first")
        ->envname("AISHELL_REGISTRY_MIRROR");
}

}  // namespace aishell::cli
