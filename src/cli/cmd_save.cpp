// `aishell save NAME... [-o FILE|-] [--format oci|docker|both]`: images from the store as one
// tar that `docker load`, `podman load` and skopeo (oci-archive:, docker-archive:) read
// (oci/archive_write.hpp). Docker's and podman's word for it; `export` is a container's files.
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.hpp"
#include "cli/image_lookup.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/held_signals.hpp"
#include "oci/archive_write.hpp"
#include "oci/image.hpp"
#include "oci/lease.hpp"
#include "registry/archive_name.hpp"

namespace aishell::cli {

namespace {

namespace ia = oci::image_archive;

struct SaveFlags {
    std::vector<std::string> names;
    std::string output = "-";
    std::string format = "both";
};

ia::Sides parse_sides(const std::string& format) {
    if (format == "oci") return ia::Sides::Oci;
    if (format == "docker") return ia::Sides::Docker;
    return ia::Sides::Both;
}

// "no such image": the names the store has, so a typo is seen at once.
[[noreturn]] void no_such_image(const oci::Store& store, const std::string& name) {
    constexpr std::size_t kShown = 12;
    std::string have;
    auto images = store.list_images();
    for (std::size_t i = 0; i < images.size() && i < kShown; ++i) have += (i ? ", " : "") + images[i].name;
    if (images.size() > kShown) have += ", ... (" + std::to_string(images.size()) + " in all)";
    throw Error("save: no such image in the store: " + name,
                images.empty() ? "the store has no images; aishell pull or aishell build makes one"
                               : "the store has: " + have);
}

std::vector<oci::LeaseEntry> blob_entries(const oci::Image& image) {
    std::vector<oci::LeaseEntry> entries{oci::LeaseEntry::blob(image.manifest_descriptor.digest),
                                         oci::LeaseEntry::blob(image.manifest.config.digest)};
    for (const auto& layer : image.manifest.layers) entries.push_back(oci::LeaseEntry::blob(layer.digest));
    return entries;
}

// Lease, then look (oci/lease.hpp): the entry's manifest (or index) is leased before it is
// read, and everything the image references before the archive reads it, so a prune or GC
// running meanwhile leaves all of it in place.
std::vector<ia::SaveImage> lease_images(const oci::Store& store, oci::Lease& lease, const std::vector<std::string>& names) {
    std::vector<ia::SaveImage> images;
    for (const auto& name : names) {
        std::optional<oci::ImageEntry> entry = find_local_image(store, name);
        if (!entry) no_such_image(store, name);
        lease.add({oci::LeaseEntry::blob(entry->descriptor.digest)});
        oci::Image image;
        try {
            image = oci::load_image(store, *entry);
        } catch (Error& e) {
            e.add_context("save " + name);
            throw;  // as it is: `throw e` would slice an Interrupted into an Error (exit 1, not 130)
        }
        lease.add(blob_entries(image));
        ia::ArchiveName archive_name = registry::archive_name(entry->name);
        images.push_back({std::move(image), {std::move(archive_name)}});
    }
    return images;
}

void notice(const std::string& line) {
    std::string text = "aishell: " + line + "\n";
    (void)!::write(STDERR_FILENO, text.data(), text.size());
}

int run_save(const CommandContext& ctx, const SaveFlags& flags) {
    const bool to_stdout = flags.output == "-";
    // docker save's refusal: a tar on a terminal is noise, and may leave it in a strange state.
    if (to_stdout && ::isatty(STDOUT_FILENO))
        throw Error("save: refusing to write a tar archive to a terminal", "use -o FILE, or redirect the output");

    oci::Store store = open_store(ctx.global);
    HeldSignals signals;  // a Ctrl-C stops the save at the next chunk, so the temp file goes
    auto lease = oci::Lease::create(store, "save");
    std::vector<ia::SaveImage> images = lease_images(store, *lease, flags.names);

    ia::ArchiveWriteOptions options;
    options.sides = parse_sides(flags.format);
    options.notice = notice;
    auto stop = [](int sig) {
        if (!sig) return;
        const char* abbrev = sigabbrev_np(sig);
        throw Interrupted("interrupted by " + (abbrev ? "SIG" + std::string(abbrev) : std::to_string(sig)), {}, sig);
    };
    options.checkpoint = [&signals, stop] { stop(signals.take()); };
    // -o - into a reader that stopped reading: the save waits for the pipe, or for a Ctrl-C.
    options.before_write = [&signals, stop](int fd) { stop(signals.wait(fd, POLLOUT)); };

    if (to_stdout) {
        ia::write_image_archive(store, images, STDOUT_FILENO, options);
        return 0;
    }
    // A device or a pipe (-o /dev/null) is written as it is; a file goes to a temp file beside
    // it, renamed over it when complete, so a failed save never leaves a half archive there.
    fs::path target(flags.output);
    struct stat st {};
    if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
        UniqueFd out = open_file(target, O_WRONLY | O_TRUNC);
        ia::write_image_archive(store, images, out.get(), options);
        return 0;
    }
    fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    TempFile out(dir, "." + target.filename().string() + ".aishell-save", 0644);
    ia::write_image_archive(store, images, out.fd(), options);
    out.commit(target);
    return 0;
}

}  // namespace

void add_save_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, flags] = add_command<SaveFlags>(
        app, ctx, "save", "Save images to a tar archive that docker load, podman load and skopeo read", run_save);
    cmd->add_option("NAME", flags->names, "Images in the store")->required();
    cmd->add_option("-o,--output", flags->output, "Write to FILE (- for stdout, the default)")->option_text("FILE");
    cmd->add_option("--format", flags->format,
                    "oci: only the OCI layout; docker: only the Docker archive; both (default): one tar that is both")
        ->check(CLI::IsMember({"oci", "docker", "both"}));
}

}  // namespace aishell::cli
