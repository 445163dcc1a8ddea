// The commands that look after the store as a whole (registered by main.cpp's table, as
// command.hpp's are): rmi and tag, volumes ls|rm|prune, system reset, check.
#pragma once

#include <filesystem>

#include "cli/command.hpp"

namespace aishell::cli {

// The store's root as an absolute path (--store, AISHELL_STORE, else the default), without
// opening or creating it: check and system reset must not make the store they look at.
// open_store (command.hpp) opens this same path.
std::filesystem::path store_root(const GlobalOptions& global);

// What `aishell setup` remembers about the foundation in the store's meta.json, for the next
// setup and for check: the reference it pulled, and when it last pulled it (RFC 3339, UTC; a
// `setup --force` that brings back the same manifest still counts as a pull).
inline constexpr const char* kFoundationReferenceMeta = "foundation.reference";
inline constexpr const char* kFoundationPulledMeta = "foundation.pulled";

void add_rmi_tag_commands(CLI::App& app, CommandContext& ctx);  // rmi and tag (cmd_rmi_tag.cpp)
void add_volumes_command(CLI::App& app, CommandContext& ctx);   // volumes ls|rm|prune (cmd_volumes.cpp)
void add_system_command(CLI::App& app, CommandContext& ctx);    // system reset (cmd_system.cpp)
void add_check_command(CLI::App& app, CommandContext& ctx);     // check (cmd_check.cpp)

}  // namespace aishell::cli
