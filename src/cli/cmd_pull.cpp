// `aishell pull REF [--platform P] [--tls-verify=false] [--quiet] [--registry-mirror URL]`:
// pulls an image into the store and names it by its normalized reference.
#include <iostream>

#include "cli/command.hpp"
#include "cli/progress.hpp"
#include "cli/pull_runner.hpp"
#include "common/error.hpp"
#include "registry/pull.hpp"

namespace aishell::cli {

namespace {

struct PullCommandOptions {
    std::string reference;
    std::string platform;
    bool tls_verify = true;
    bool quiet = false;
    std::string mirror;
};

int run_pull(const CommandContext& ctx, const PullCommandOptions& o) {
    registry::Reference ref = registry::Reference::parse(o.reference);
    PullSettings settings;
    if (!o.platform.empty()) settings.platform = oci::Platform::parse(o.platform);
    settings.tls_verify = o.tls_verify;
    settings.quiet = o.quiet;
    settings.mirror = o.mirror;
    oci::Store store = open_store(ctx.global);
    registry::PullResult result = pull_with_progress(ctx, store, ref, settings);
    if (!o.quiet) std::cout << "Pulled " << result.name << "\nDigest: " << result.manifest.digest.str() << "\n";
    return 0;
}

}  // namespace

registry::PullResult pull_with_progress(const CommandContext& ctx, oci::Store& store,
                                        const registry::Reference& ref, const PullSettings& settings) {
    PullProgress progress(PullProgress::detect_mode(settings.quiet));
    registry::PullOptions options;
    options.platform = settings.platform;
    options.tls_verify = settings.tls_verify;
    if (!settings.mirror.empty()) options.mirror = settings.mirror;
    options.debug = make_debug_log(ctx.global);
    options.observer = &progress;
    InterruptWatcher interrupt;  // before the pull starts its threads
    options.cancel = interrupt.flag();
    registry::PullResult result;
    try {
        result = registry::pull_image(store, ref, options);
    } catch (Error& e) {
        if (interrupt.cancelled())
            throw Interrupted("pull " + ref.str() + ": interrupted; the store is unchanged",
                              "run the pull again: it resumes partial downloads", interrupt.signal_number());
        throw;
    }
    progress.finish();
    return result;
}

void add_pull_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, o] =
        add_command<PullCommandOptions>(app, ctx, "pull", "Pull an image from a registry into the store", run_pull);
    cmd->add_option("reference", o->reference, "Image reference, e.g. debian:bookworm or host:5000/team/app:1")
        ->required();
    cmd->add_option("--platform", o->platform, "Platform to pick from a multi-platform image (os/arch[/variant])");
    add_tls_verify_flag(*cmd, o->tls_verify);
    cmd->add_flag("-q,--quiet", o->quiet, "Print nothing");
    cmd->add_option("--registry-mirror", o->mirror, "Mirror for Docker Hub, tried first")
        ->envname("AISHELL_REGISTRY_MIRROR");
}

}  // namespace aishell::cli
