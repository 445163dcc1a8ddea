// `aishell push NAME [REF] [--tls-verify=false] [--chunk-size SIZE] [--quiet]`: pushes an image
// from the store to a registry, under REF or, without one, under NAME itself when NAME names
// its registry (127.0.0.1:5000/team/base:1).
#include <iostream>

#include "cli/command.hpp"
#include "cli/format.hpp"
#include "cli/image_lookup.hpp"
#include "cli/progress.hpp"
#include "common/error.hpp"
#include "registry/push.hpp"

namespace aishell::cli {

namespace {

struct PushCommandOptions {
    std::string name;
    std::string destination;
    bool tls_verify = true;
    bool quiet = false;
    std::string chunk_size;
};

// REF, or NAME when it names a registry. A local name ("aishell:base", "app") would otherwise
// normalise to Docker Hub, where nobody means to publish by accident.
registry::Reference destination_of(const PushCommandOptions& o) {
    if (!o.destination.empty()) return registry::Reference::parse(o.destination);
    if (!registry::names_registry(o.name))
        throw Error("push " + o.name + ": the name has no registry to push to",
                    "give the destination: aishell push " + o.name + " REGISTRY/REPOSITORY[:TAG]");
    return registry::Reference::parse(o.name);
}

int run_push(const CommandContext& ctx, const PushCommandOptions& o) {
    registry::Reference target = destination_of(o);
    registry::PushOptions options;
    options.tls_verify = o.tls_verify;
    if (!o.chunk_size.empty()) options.chunk_size = parse_size(o.chunk_size, "--chunk-size");
    oci::Store store = open_store(ctx.global);
    oci::ImageEntry image = with_context("push " + o.name, [&] { return require_local_image(store, o.name); });

    PullProgress progress(PullProgress::detect_mode(o.quiet), 2, "Pushing");
    options.debug = make_debug_log(ctx.global);
    options.observer = &progress;
    InterruptWatcher interrupt;  // before the push starts its threads
    options.cancel = interrupt.flag();
    registry::PushResult result;
    try {
        result = registry::push_image(store, image, target, options);
    } catch (Error& e) {
        if (interrupt.cancelled())
            throw Interrupted("push " + o.name + " to " + target.str() + ": interrupted; the tag was not written",
                              "run the push again: blobs the registry has already are not sent again",
                              interrupt.signal_number());
        throw;
    }
    progress.finish();
    if (!o.quiet)
        std::cout << "Pushed " << result.name << "\nDigest: " << result.manifest.digest.str() << "\n";
    return 0;
}

}  // namespace

void add_push_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, o] =
        add_command<PushCommandOptions>(app, ctx, "push", "Push an image from the store to a registry", run_push);
    cmd->add_option("name", o->name, "Image in the store, e.g. aishell:base or host:5000/team/base:1")->required();
    cmd->add_option("destination", o->destination,
                    "Where to push it, e.g. host:5000/team/base:1 (default: NAME, when it names a registry)");
    add_tls_verify_flag(*cmd, o->tls_verify);
    cmd->add_option("--chunk-size", o->chunk_size,
                    "Upload blobs larger than SIZE in chunks of SIZE (e.g. 5m); streamed in one request when the "
                    "registry refuses chunks");
    cmd->add_flag("-q,--quiet", o->quiet, "Print nothing");
}

}  // namespace aishell::cli
