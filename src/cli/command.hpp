// How subcommands plug into the CLI (one file per command, as crun does): each add_*_command
// registers its CLI11 subcommand and, when that subcommand is parsed, sets ctx.run to the
// action. main() runs it and turns its result into the exit status.
#pragma once

#include <functional>
#include <string>

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
void add_images_command(CLI::App& app, CommandContext& ctx);
void add_inspect_command(CLI::App& app, CommandContext& ctx);
void add_login_commands(CLI::App& app, CommandContext& ctx);  // login and logout
void add_setup_command(CLI::App& app, CommandContext& ctx);
void add_exec_command(CLI::App& app, CommandContext& ctx);  // exec, __unpack, __rm
void add_build_command(CLI::App& app, CommandContext& ctx);

}  // namespace aishell::cli
