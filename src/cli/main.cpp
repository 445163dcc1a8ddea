// aishell's entry point: the hidden helpers (helper_table.hpp), global options, the subcommand
// table, and where an error that escapes a command becomes its one line (error_line.hpp) and an
// exit status.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "aishell_version.hpp"
#include "cli/command.hpp"
#include "cli/error_line.hpp"
#include "cli/helper_table.hpp"
#include "cli/store_commands.hpp"
#include "common/error.hpp"
#include "common/file.hpp"

namespace aishell::cli {

std::filesystem::path store_root(const GlobalOptions& global) {
    return std::filesystem::absolute(global.store_dir.empty() ? oci::Store::default_root()
                                                               : std::filesystem::path(global.store_dir));
}

oci::Store open_store(const GlobalOptions& global) { return oci::Store::open(store_root(global)); }

namespace {

// Which function registers a subcommand. CLI11 builds every option of every subcommand before it
// parses (about 0.2 ms, 4% of an `aishell exec` of an unpacked image), so a command line that
// names its subcommand gets only that one registered; anything else (no subcommand, help, a
// typo) gets them all, and CLI11 reports as it always has. Hidden helpers are not here: main()
// runs them from helper_table.hpp before CLI11 sees the command line.
using CommandAdder = void (*)(CLI::App&, CommandContext&);
struct CommandEntry {
    std::string_view name;
    CommandAdder add;
};
constexpr CommandEntry kCommands[] = {
    {"pull", add_pull_command},        {"login", add_login_commands},       {"logout", add_login_commands},
    {"images", add_images_command},    {"inspect", add_inspect_command},    {"setup", add_setup_command},
    {"exec", add_exec_command},        {"run", add_exec_command},           {"build", add_build_command},
    {"load", add_load_command},        {"save", add_save_command},          {"push", add_push_command},
    {"rmi", add_rmi_tag_commands},     {"tag", add_rmi_tag_commands},       {"volumes", add_volumes_command},
    {"system", add_system_command},    {"check", add_check_command},
};

// The first word that is neither an option nor the value of --store.
std::string_view subcommand_word(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--store") ++i;
        else if (!a.empty() && a[0] != '-') return a;
    }
    return {};
}

bool is_global_option(std::string_view a) { return a == "--store" || a.rfind("--store=", 0) == 0 || a == "--debug"; }

// `aishell [OPTIONS]` (no command word: nothing, or an option first) is `aishell run [OPTIONS]`,
// the shell in the project's image. The global options move before "run" (run takes every
// word after it for itself); help and version stay the app's.
std::vector<std::string> bare_form_args(int argc, char** argv) {
    std::vector<std::string> global, rest;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (!rest.empty() || !is_global_option(a)) {
            if (rest.empty() && ((!a.empty() && a[0] != '-') || a == "-h" || a == "--help" || a == "--version")) return {};
            rest.emplace_back(a);
            continue;
        }
        global.emplace_back(a);
        if (a == "--store" && i + 1 < argc) global.emplace_back(argv[++i]);
    }
    std::vector<std::string> out{argv[0]};
    out.insert(out.end(), global.begin(), global.end());
    out.emplace_back("run");
    out.insert(out.end(), rest.begin(), rest.end());
    return out;
}

void add_commands(CLI::App& app, CommandContext& ctx, std::string_view word) {
    for (const auto& c : kCommands)
        if (c.name == word) return c.add(app, ctx);
    std::vector<CommandAdder> added;
    for (const auto& c : kCommands) {
        if (std::find(added.begin(), added.end(), c.add) != added.end()) continue;
        c.add(app, ctx);
        added.push_back(c.add);
    }
}

int run_main(int argc, char** argv) {
    // A helper is started as `aishell NAME ARGS...` (runtime::spawn_in_userns), never by hand
    // with global options before NAME.
    if (argc >= 2)
        if (const HelperEntry* helper = find_helper(argv[1])) return helper->main({argv + 2, argv + argc});
    std::vector<std::string> bare = bare_form_args(argc, argv);
    std::vector<char*> bare_argv;
    if (!bare.empty()) {
        for (auto& a : bare) bare_argv.push_back(a.data());
        bare_argv.push_back(nullptr);
        argc = static_cast<int>(bare.size());
        argv = bare_argv.data();
    }
    CLI::App app{"aishell: rootless containerized shells for your projects"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("aishell ") + AISHELL_VERSION);
    CommandContext ctx;
    app.add_option("--store", ctx.global.store_dir, "Store directory")
        ->envname("AISHELL_STORE")
        ->option_text("DIR");
    app.add_flag("--debug", ctx.global.debug, "Log HTTP exchanges (credentials redacted)");

    add_commands(app, ctx, subcommand_word(argc, argv));

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        print_error(e.what(), "see aishell --help");
        return 2;
    }
    return ctx.run ? ctx.run() : 0;
}

}  // namespace
}  // namespace aishell::cli

int main(int argc, char** argv) {
    try {
        return aishell::cli::run_main(argc, argv);
    } catch (const aishell::Interrupted& e) {
        aishell::cli::print_error(e);
        return e.exit_status();
    } catch (const std::exception& e) {
        aishell::cli::print_error(e);
    }
    return 1;
}
