// `aishell load [-i FILE] [--name NAME] [--compression gzip|zstd] [-q]`: reads an image archive
// (docker save, podman save, skopeo oci-archive, aishell save; plain or gzip-compressed) from a
// file or stdin into the store and names its images (oci/image_archive.hpp).
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <iostream>

#include "cli/command.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/held_signals.hpp"
#include "composer/chain_names.hpp"
#include "oci/image_archive.hpp"
#include "registry/reference.hpp"

namespace aishell::cli {

namespace {

struct LoadCommandOptions {
    std::string input;  // empty or "-": stdin
    std::string name;
    std::string compression = "gzip";
    bool quiet = false;
};

// A name the archive (or --name) gives: one `exec --image` and `pull` can look up, and not one
// of the chain's, which only the chain sets.
void check_loaded_name(const std::string& name) {
    if (auto refusal = composer::chain_name_refusal(name, "overwritten")) throw Error(*refusal);
    (void)registry::Reference::parse(name);
}

int run_load(const CommandContext& ctx, const LoadCommandOptions& o) {
    const bool from_stdin = o.input.empty() || o.input == "-";
    // docker load refuses a terminal too ("requested load from stdin, but stdin is empty"):
    // an archive typed or pasted there is never what was meant.
    if (from_stdin && ::isatty(STDIN_FILENO))
        throw Error("load: refusing to read an image archive from a terminal",
                    "aishell load -i FILE, or pipe the archive in: aishell load < FILE");
    UniqueFd file;
    if (!from_stdin) file = open_file(o.input, O_RDONLY);
    const int fd = from_stdin ? STDIN_FILENO : file.get();

    oci::ArchiveLoadOptions options;
    options.compression = o.compression == "zstd" ? oci::media_type::Compression::Zstd : oci::media_type::Compression::Gzip;
    if (!o.name.empty()) options.name = o.name;
    options.check_name = check_loaded_name;
    oci::Store store = open_store(ctx.global);
    // A Ctrl-C stops the load at its next read, even one waiting on a stalled pipe, and the
    // loader's rollback leaves the store as it was (as pull and build do).
    HeldSignals signals;
    options.before_read = [&signals](int in) {
        if (int sig = signals.wait(in, POLLIN)) {
            const char* abbrev = sigabbrev_np(sig);
            throw Interrupted("interrupted by " + (abbrev ? "SIG" + std::string(abbrev) : std::to_string(sig)) +
                                  "; the store is unchanged",
                              {}, sig);
        }
    };
    std::vector<oci::LoadedImage> loaded = with_context(
        "load " + (from_stdin ? std::string("from stdin") : o.input), [&] { return oci::load_image_archive(store, fd, options); });
    if (!o.quiet)
        for (const auto& image : loaded)
            for (const auto& name : image.names) std::cout << "Loaded image: " << name << "\n";
    return 0;
}

}  // namespace

void add_load_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, o] = add_command<LoadCommandOptions>(
        app, ctx, "load", "Load images from a tar archive (docker save, podman save, skopeo, aishell save)", run_load);
    cmd->add_option("-i,--input", o->input, "Archive to read, plain or gzip-compressed (default: stdin)")
        ->option_text("FILE");
    cmd->add_option("--name", o->name, "Name the archive's image (it must hold one) instead of its own names");
    cmd->add_option("--compression", o->compression,
                    "Compression for the uncompressed layers of Docker archives: gzip (default) or zstd")
        ->check(CLI::IsMember({"gzip", "zstd"}));
    cmd->add_flag("-q,--quiet", o->quiet, "Print nothing");
}

}  // namespace aishell::cli
