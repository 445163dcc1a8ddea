// `aishell setup [--force] [--foundation REF]`: pulls the foundation image, names it
// aishell:foundation, remembers its reference in the store, and points aishell:base at the
// same manifest unless a custom base (built from ~/.aishell/Dockerfile) exists. Plain setup
// never re-pulls a foundation that is present under the same reference; --force does.
#include <iostream>

#include "cli/command.hpp"
#include "cli/pull_runner.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/image.hpp"
#include "registry/reference.hpp"

namespace aishell::cli {

namespace {

constexpr const char* kDefaultFoundation = "docker.io/library/debian:bookworm-slim";
constexpr const char* kFoundationName = "aishell:foundation";
constexpr const char* kBaseName = "aishell:base";
constexpr const char* kFoundationMetaKey = "foundation.reference";
// Set by the composer on a base built from ~/.aishell/Dockerfile (DESIGN.md's labels).
constexpr const char* kCustomBaseLabel = "aishell.base.dockerfile.hash";

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
    if (auto remembered = store.get_meta(kFoundationMetaKey)) return *remembered;
    return kDefaultFoundation;
}

bool is_custom_base(const oci::Store& store, const oci::ImageEntry& base) {
    oci::Image image = oci::load_image(store, base);
    return image.config.labels().count(kCustomBaseLabel) != 0;
}

int run_setup(const CommandContext& ctx, const SetupOptions& o) {
    oci::Store store = open_store(ctx.global);
    registry::Reference ref = with_context("foundation", [&] {
        return registry::Reference::parse(choose_foundation(store, o));
    });
    auto present = store.find_image(kFoundationName);
    bool same_reference = store.get_meta(kFoundationMetaKey) == ref.str();

    oci::Descriptor manifest;
    if (o.force || !present || !same_reference) {
        PullSettings settings;
        settings.quiet = o.quiet;
        settings.tls_verify = o.tls_verify;
        settings.mirror = o.mirror;
        manifest = pull_with_progress(ctx, store, ref, settings).manifest;
    } else {
        manifest = present->descriptor;
    }

    bool custom_base = false;
    {
        oci::StoreLock lock = store.lock_exclusive();
        store.tag_image(kFoundationName, manifest);
        store.set_meta(kFoundationMetaKey, ref.str());
        auto base = store.find_image(kBaseName);
        custom_base = base && base->descriptor.digest != manifest.digest && is_custom_base(store, *base);
        // The alias follows the foundation; a custom base is rebuilt by the composer when it
        // sees that its foundation changed (label aishell.base.foundation.id).
        if (!custom_base) store.tag_image(kBaseName, manifest);
    }

    if (!o.quiet) {
        std::cout << "Foundation: " << ref.str() << " (" << manifest.digest.str() << ")\n"
                  << (custom_base ? "Base image: custom (~/.aishell/Dockerfile)\n"
                                  : "Base image: default (foundation alias)\n");
    }
    return 0;
}

}  // namespace

void add_setup_command(CLI::App& app, CommandContext& ctx) {
    auto o = std::make_shared<SetupOptions>();
    auto* cmd = app.add_subcommand("setup", "Pull the foundation image and name aishell:foundation and aishell:base");
    cmd->add_option("--foundation", o->foundation,
                    std::string("Foundation image reference (default ") + kDefaultFoundation +
                        ", or the one from the last setup)")
        ->envname("AISHELL_FOUNDATION");
    cmd->add_flag("--force", o->force, "Pull the foundation again even when it is present");
    cmd->add_flag("-q,--quiet", o->quiet, "Print nothing");
    cmd->add_flag("--tls-verify{true},!--no-tls-verify", o->tls_verify,
                  "Verify the registry's TLS certificate; --tls-verify=false also allows plain HTTP");
    cmd->add_option("--registry-mirror", o->mirror, "Mirror for Docker Hub, tried first")
        ->envname("AISHELL_REGISTRY_MIRROR");
    cmd->callback([&ctx, o] { ctx.run = [&ctx, o] { return run_setup(ctx, *o); }; });
}

}  // namespace aishell::cli
