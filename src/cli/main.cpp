// aishell's entry point: global options, the subcommand table, and the one place where an
// error becomes "aishell: error: ..." and an exit status.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <iostream>

#include <CLI/CLI.hpp>

#include "aishell_version.hpp"
#include "cli/command.hpp"
#include "common/error.hpp"
#include "common/file.hpp"

namespace aishell::cli {

oci::Store open_store(const GlobalOptions& global) {
    if (!global.store_dir.empty()) return oci::Store::open(global.store_dir);
    return oci::Store::open(oci::Store::default_root());
}

namespace {

void print_error(const std::string& message, const std::string& hint) {
    std::string line = "aishell: error: " + message;
    if (!hint.empty()) line += " (hint: " + hint + ")";
    line += '\n';
    // One write so the line is not interleaved with other output.
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

int run_main(int argc, char** argv) {
    CLI::App app{"aishell: rootless containerized shells for your projects"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("aishell ") + AISHELL_VERSION);
    CommandContext ctx;
    app.add_option("--store", ctx.global.store_dir, "Store directory")
        ->envname("AISHELL_STORE")
        ->option_text("DIR");
    app.add_flag("--debug", ctx.global.debug, "Log HTTP exchanges (credentials redacted)");

    add_pull_command(app, ctx);
    add_login_commands(app, ctx);
    add_images_command(app, ctx);
    add_inspect_command(app, ctx);
    add_setup_command(app, ctx);
    add_exec_command(app, ctx);
    add_build_command(app, ctx);
    add_build_helper_command(app, ctx);

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
        aishell::cli::print_error(e.message(), e.hint());
        return e.exit_status();
    } catch (const aishell::Error& e) {
        aishell::cli::print_error(e.message(), e.hint());
    } catch (const std::exception& e) {
        aishell::cli::print_error(e.what(), {});
    }
    return 1;
}
