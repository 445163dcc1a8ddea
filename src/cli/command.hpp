// How subcommands plug into the CLI (one file per command, as crun does): each add_*_command
// registers its CLI11 subcommand and, when that subcommand is parsed, sets ctx.run to the
// action. main() runs it and turns its result into the exit status.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "oci/store.hpp"

namespace aishell::cli {

struct GlobalOptions {
    std::string store_dir;  // --store / AISHELL_STORE
    bool debug = false;     // --debug: log HTTP exchanges (credentials redacted)
};

struct CommandContext {
    GlobalOptions global;
    std::function<int()> run;  // set by the parsed subcommand; returns the exit status
};

// Opens the store named by --store, $AISHELL_STORE or the default location.
oci::Store open_store(const GlobalOptions& global);

// Adds the subcommand `name` to `parent` with a fresh Options for its flags to fill; when it is
// the parsed subcommand, main() runs `action(ctx, options)`. Returns the subcommand, to declare
// its flags on, and the Options (shared: CLI11 fills it while parsing, after this returns).
template <class Options, class Action>
std::pair<CLI::App*, std::shared_ptr<Options>> add_command(CLI::App& parent, CommandContext& ctx,
                                                           const std::string& name, const std::string& description,
                                                           Action action) {
    auto options = std::make_shared<Options>();
    CLI::App* command = parent.add_subcommand(name, description);
    command->callback([&ctx, options, action] { ctx.run = [&ctx, options, action] { return action(ctx, *options); }; });
    return {command, options};
}

// --tls-verify (the default) and --no-tls-verify / --tls-verify=false, spelled as podman and
// skopeo spell them, on every command that talks to a registry.
inline void add_tls_verify_flag(CLI::App& command, bool& tls_verify) {
    command.add_flag("--tls-verify{true},!--no-tls-verify", tls_verify,
                     "Verify the registry's TLS certificate; --tls-verify=false also allows plain HTTP");
}

// A command word that only groups subcommands (`volumes ls`, `system reset`): one must follow.
inline CLI::App* add_command_group(CLI::App& app, const std::string& name, const std::string& description) {
    CLI::App* group = app.add_subcommand(name, description);
    group->require_subcommand(1);
    return group;
}

void add_pull_command(CLI::App& app, CommandContext& ctx);
void add_push_command(CLI::App& app, CommandContext& ctx);
void add_images_command(CLI::App& app, CommandContext& ctx);
void add_inspect_command(CLI::App& app, CommandContext& ctx);
void add_login_commands(CLI::App& app, CommandContext& ctx);  // login and logout
void add_setup_command(CLI::App& app, CommandContext& ctx);
void add_exec_command(CLI::App& app, CommandContext& ctx);  // exec and run
void add_build_command(CLI::App& app, CommandContext& ctx);
void add_load_command(CLI::App& app, CommandContext& ctx);
void add_save_command(CLI::App& app, CommandContext& ctx);

// The build engine's options on `aishell build` and its run (cmd_build_helpers.cpp).
struct BuildEngineFlags {
    const GlobalOptions* global = nullptr;
    std::vector<std::string> tags;
    std::vector<std::string> labels;  // --label K=V (K alone: an empty value)
    bool no_cache = false;
    bool quiet = false;
    std::string compression = "gzip";
    std::string source_date_epoch;
    std::string progress = "plain";
    std::vector<std::string> secrets;  // --secret id=X,src=FILE|env=VAR
    std::vector<std::string> ssh;      // --ssh default|ID[=SOCKET]
};
void add_build_engine_options(CLI::App& build, BuildEngineFlags& flags, const GlobalOptions& global);
int run_engine_build(const BuildEngineFlags& flags, const std::string& context, const std::string& dockerfile,
                     const std::map<std::string, std::string>& build_args, const std::string& target,
                     const std::string& platform);

// A build's FROM image that is not in the store, pulled (with a "pulling REF" line unless
// quiet); returns its index name. SIGINT/SIGTERM stop the pull as an interruption.
std::string pull_for_build(oci::Store& store, const std::string& ref_text, bool quiet);

}  // namespace aishell::cli
