// How subcommands plug into the CLI (one file per command, as crun does): each add_*_command
// registers its CLI11 subcommand and, when that subcommand is parsed, sets ctx.run to the
// action. main() runs it and turns its result into the exit status.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
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
