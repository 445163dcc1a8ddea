// `aishell build` without --check: the build engine's own options (-t, --label, --no-cache, --quiet,
// --compression, --source-date-epoch, --progress, --secret, --ssh) and the call into
// composer::build_image. The helpers the engine re-executes are in composer/helpers.hpp.
#include <iostream>

#include "cli/command.hpp"
#include "cli/image_lookup.hpp"
#include "cli/progress.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/parse_number.hpp"
#include "composer/build_engine.hpp"
#include "composer/build_step.hpp"
#include "composer/chain_names.hpp"
#include "registry/pull.hpp"
#include "registry/reference.hpp"

namespace aishell::cli {

namespace {

std::optional<std::int64_t> source_date_epoch(const BuildEngineFlags& flags) {
    std::string text = flags.source_date_epoch;
    if (text.empty()) text = get_env("SOURCE_DATE_EPOCH").value_or("");
    if (text.empty()) return std::nullopt;
    if (auto v = to_number<std::int64_t>(text); v && *v >= 0) return *v;
    throw Error("invalid SOURCE_DATE_EPOCH \"" + text + "\"", "seconds since 1970, e.g. 1700000000");
}

// --label K=V, repeatable, the last of a key wins; a bare K is an empty value and an empty K an
// error, as the docker CLI reads them (opts.ValidateLabel, ConvertKVStringsToMap).
std::map<std::string, std::string> parse_labels(const std::vector<std::string>& raw) {
    std::map<std::string, std::string> out;
    for (const auto& arg : raw) {
        const auto eq = arg.find('=');
        const std::string key = arg.substr(0, eq);
        if (key.empty())
            throw Error("invalid --label \"" + arg + "\": the name is empty", "write --label NAME=VALUE");
        out[key] = eq == std::string::npos ? std::string() : arg.substr(eq + 1);
    }
    return out;
}

}  // namespace

std::string pull_for_build(oci::Store& store, const std::string& ref_text, bool quiet) {
    if (auto local = find_local_image(store, ref_text)) return local->name;
    auto ref = registry::Reference::parse(ref_text);
    if (!quiet) std::cerr << "pulling " << ref.str() << std::endl;
    registry::PullOptions options;
    // The build holds SIGINT/SIGTERM pending (common/held_signals.hpp); this watcher takes them
    // during the pull, which then stops at once, and the build unwinds through its rollback.
    InterruptWatcher interrupt;
    options.cancel = interrupt.flag();
    try {
        return registry::pull_image(store, ref, options).name;
    } catch (const Error&) {
        if (interrupt.cancelled())
            throw Interrupted("pull " + ref.str() + ": interrupted",
                              "the build stopped; nothing was tagged and the store is as it was", interrupt.signal_number());
        throw;
    }
}

void add_build_engine_options(CLI::App& build, BuildEngineFlags& flags, const GlobalOptions& global) {
    flags.global = &global;
    build.add_option("-t,--tag", flags.tags, "Name the image (repeatable)")->allow_extra_args(false);
    build.add_option("--label", flags.labels, "Set a label on the image: NAME=VALUE (repeatable)")
        ->allow_extra_args(false);
    build.add_flag("--no-cache", flags.no_cache, "Do not use the step cache");
    build.add_flag("-q,--quiet", flags.quiet, "Print only the image id (RUN output only when a step fails)");
    build.add_option("--compression", flags.compression, "Layer compression: gzip (default) or zstd")
        ->check(CLI::IsMember({"gzip", "zstd"}));
    build.add_option("--source-date-epoch", flags.source_date_epoch,
                     "Clamp layer mtimes and history dates to this time (default: $SOURCE_DATE_EPOCH)");
    build.add_option("--progress", flags.progress, "Progress output: plain (the only style)")
        ->check(CLI::IsMember({"plain", "auto", "tty"}));
    build.add_option("--secret", flags.secrets,
                     "Secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (repeatable)")
        ->allow_extra_args(false);
    build.add_option("--ssh", flags.ssh,
                     "SSH agent for RUN --mount=type=ssh: default or ID[=SOCKET] (default socket: $SSH_AUTH_SOCK)")
        ->allow_extra_args(false);
}

int run_engine_build(const BuildEngineFlags& flags, const std::string& context, const std::string& dockerfile,
                     const std::map<std::string, std::string>& build_args, const std::string& target,
                     const std::string& platform) {
    // aishell:foundation, aishell:base and aishell:ext-* are the chain's: a build -t that moved
    // one would be taken for the chain's own image (or undone by the next run), as tag would.
    for (const auto& tag : flags.tags)
        if (auto refusal = composer::chain_name_refusal(tag, "overwritten by build -t")) throw Error(*refusal);
    std::error_code ec;
    if (!std::filesystem::is_directory(context, ec))
        throw Error("build context " + context + " is not a directory", "aishell build [OPTIONS] CONTEXT_DIR");
    if (!platform.empty() && oci::Platform::parse(platform).str() != oci::Platform::host().str())
        throw Error("--platform " + platform + " is not the host's platform (" + oci::Platform::host().str() + ")",
                    "builds run natively; cross-platform builds are not supported");
    std::map<std::string, std::string> labels = parse_labels(flags.labels);
    // Malformed --secret/--ssh values fail before the store is touched.
    std::vector<composer::SecretSource> secrets;
    std::vector<composer::SshSource> ssh;
    for (const auto& value : flags.secrets)
        secrets.push_back(composer::parse_secret_flag(value, [](const std::string& name) {
            return get_env(name.c_str()).has_value();
        }));
    composer::check_secret_sources(secrets);
    for (const auto& value : flags.ssh) {
        ssh.push_back(composer::parse_ssh_flag(value, get_env("SSH_AUTH_SOCK")));
        for (std::size_t i = 0; i + 1 < ssh.size(); ++i)
            if (ssh[i].id == ssh.back().id)
                throw Error("--ssh " + value + ": the id " + ssh.back().id + " is given twice",
                            "give each agent a distinct id");
    }
    oci::Store store = flags.global ? open_store(*flags.global) : oci::Store::open(oci::Store::default_root());
    composer::BuildRequest req;
    req.context = context;
    req.dockerfile = dockerfile;
    req.build_args = build_args;
    req.target = target;
    req.platform = platform;
    req.tags = flags.tags;
    req.labels = std::move(labels);
    req.no_cache = flags.no_cache;
    req.quiet = flags.quiet;
    req.compression = flags.compression;
    req.source_date_epoch = source_date_epoch(flags);
    req.pull = [quiet = flags.quiet](oci::Store& s, const std::string& ref) { return pull_for_build(s, ref, quiet); };
    req.secrets = std::move(secrets);
    req.ssh = std::move(ssh);
    composer::BuildResult result = composer::build_image(store, req);
    if (!flags.quiet)
        for (const auto& tag : flags.tags) std::cerr << "tagged " << tag << std::endl;
    std::cout << result.image_id.str() << std::endl;
    return 0;
}

}  // namespace aishell::cli
