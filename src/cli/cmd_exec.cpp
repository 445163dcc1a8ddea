// `aishell exec` and `aishell run` (and `aishell` alone, which is `run` with no command: a shell):
// run a command in an image of the store (pulled first when missing, as `docker run` does), in
// the project of the current directory (bound at its own path). The helpers the runtime
// re-executes are in runtime/helpers.hpp.
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/chain_image.hpp"
#include "cli/command.hpp"
#include "cli/error_line.hpp"
#include "cli/git_identity.hpp"
#include "cli/host_context.hpp"
#include "cli/image_lookup.hpp"
#include "cli/pull_runner.hpp"
#include "common/error.hpp"
#include "composer/chain.hpp"
#include "oci/image.hpp"
#include "registry/reference.hpp"
#include "runtime/launch.hpp"

namespace aishell::cli {

namespace fs = std::filesystem;

namespace {

// exec: for scripts, no terminal unless -t. run (and `aishell` alone, main.cpp's bare form):
// the terminal attached when there is one, and a shell when no command is given.
enum class Mode { Exec, Run };

struct ExecArgs {
    Mode mode = Mode::Exec;
    std::string image;
    runtime::RunOptions run;
    std::string network = "host";
    std::string userns;
    std::string user, workdir, entrypoint;
    bool tty = false;
    ChainRunOptions chain;  // --rebuild, --quiet: the project's image
    std::vector<std::string> unused_positional;  // see add_exec_options
};

// The name as written first, then its normalized form; only a miss is pulled (as `docker run`),
// with the same progress output and Ctrl-C handling as `aishell pull`.
oci::ImageEntry find_or_pull(const CommandContext& ctx, oci::Store& store, const std::string& name) {
    if (auto entry = find_local_image(store, name)) return *entry;
    auto ref = with_context("image " + name, [&] { return registry::Reference::parse(name); });
    auto pulled = pull_with_progress(ctx, store, ref, PullSettings{});
    if (auto entry = store.find_image(pulled.name)) return *entry;
    return require_local_image(store, name);
}

// What every run takes from the host (host_context.hpp): the project bound at its own path and
// made the working directory (unless -w), the ssh agent, the passthrough variables and git
// identity (under -e, which ProcessOptions applies last).
void add_host_context(ExecArgs& a, const CLI::App& sub, GitIdentity& git) {
    std::error_code ec;
    fs::path cwd = fs::current_path(ec);
    if (!ec) {
        fs::path project = composer::find_project(cwd);
        // "/" as the project would cover the image's root: nothing is bound then.
        if (project != project.root_path()) {
            a.run.binds.push_back(runtime::BindSpec{project, project.string(), false});
            if (!sub.count("--workdir")) a.run.process.workdir = cwd.string();
        }
    }
    auto& host_env = a.run.process.host_env;
    host_env = passthrough_env();
    if (auto agent = ssh_agent()) {
        a.run.binds.push_back(agent->bind);
        host_env.push_back(agent->env);
    }
    auto identity = git.finish();
    host_env.insert(host_env.end(), identity.begin(), identity.end());
}

// exec: -i/-t as asked. run and the shell: stdin always, and a terminal when stdin and stdout
// are both terminals (stdout redirected to a file gets no pty's CRLF line ends).
void set_terminal(ExecArgs& a) {
    a.run.process.tty = a.tty;
    if (a.mode == Mode::Exec) return;
    a.run.interactive = true;
    if (::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO)) a.run.process.tty = true;
    if (a.run.process.command.empty()) a.run.process.default_shell = true;
}

int run_exec(const CommandContext& ctx, ExecArgs& a, CLI::App& sub) {
    try {
        auto store = open_store(ctx.global);
        // When the remembered answer no longer stands, git runs while the image is found and
        // the run prepared (its answer is read last).
        GitIdentity git = GitIdentity::start(store.cache_dir() / "git-identity");
        // Without --image: the project's image from the chain (built first when stale).
        if (!a.image.empty() && a.chain.rebuild)
            throw Error("--rebuild rebuilds the project's image; it does not apply to --image " + a.image);
        auto entry = a.image.empty() ? project_image(store, a.chain) : find_or_pull(ctx, store, a.image);
        auto image = oci::load_image(store, entry, std::nullopt, oci::BlobCheck::TrustStore);
        if (a.network == "none") a.run.network = runtime::Network::None;
        else if (a.network != "host") throw Error("--network " + a.network + " is not supported", "use host or none");
        if (!a.userns.empty() && a.userns != "keep-id") throw Error("--userns=" + a.userns + " is not supported", "use keep-id");
        a.run.process.keep_id = a.userns == "keep-id";
        if (sub.count("--user")) a.run.process.user = a.user;
        if (sub.count("--workdir")) a.run.process.workdir = a.workdir;
        if (sub.count("--entrypoint")) a.run.process.entrypoint = a.entrypoint;
        set_terminal(a);
        add_host_context(a, sub, git);
        auto result = runtime::exec_image(store, image, a.run);
        if (!result.error.empty()) print_error(result.error);
        return result.status;
    } catch (const Interrupted&) {
        throw;  // main reports it and exits 128+N
    } catch (const std::exception& e) {
        print_error(e);
        return 125;  // aishell failed before the command ran, as `docker run`
    }
}

// The options exec and run share (docker run's), and the command words after them.
void add_exec_options(CLI::App* sub, const std::shared_ptr<ExecArgs>& args) {
    sub->add_option("--image", args->image, "Image to run (default: this project's image from the chain)");
    sub->add_flag("--rebuild", args->chain.rebuild, "Rebuild this project's image (without the step cache) first");
    sub->add_flag("-q,--quiet", args->chain.quiet, "No build spinner (a failed build still shows its output)");
    sub->add_option("-v,--volume", args->run.volumes,
                    "Bind mount HOST:CONTAINER[:ro] (HOST a path: /abs or ./rel), or a named volume NAME:CONTAINER")
        ->allow_extra_args(false);
    sub->add_option("-e,--env", args->run.process.env, "Set K=V, or pass K from this environment")->allow_extra_args(false);
    sub->add_option("-w,--workdir", args->workdir, "Working directory inside the container (default: the current directory)");
    sub->add_option("-u,--user", args->user, "User: name|uid[:group|gid]");
    sub->add_option("--network", args->network, "host (default) or none");
    sub->add_option("--userns", args->userns, "keep-id: run as your own uid/gid");
    sub->add_option("--cap-add", args->run.cap_add, "Add a capability (or ALL)")->allow_extra_args(false);
    sub->add_option("--cap-drop", args->run.cap_drop, "Drop a capability (or ALL)")->allow_extra_args(false);
    sub->add_option("--security-opt", args->run.security_opts,
                    "seccomp=unconfined, seccomp=PROFILE.json, no-new-privileges")->allow_extra_args(false);
    sub->add_option("--entrypoint", args->entrypoint, "Override the image's entrypoint");
    sub->add_flag("-i,--interactive", args->run.interactive, "Keep stdin open");
    sub->add_flag("-t,--tty", args->tty, "Allocate a pseudo-terminal");
    sub->add_flag("--keep", args->run.keep_run_dir, "Keep the run's upper layer in the store's tmp/");
    // Everything from the first positional (or after --) is the command, options included.
    sub->prefix_command();
    // CLI11 (2.1) hands the words after "--" back to the parent app when the subcommand has no
    // positional left to fill, and the parent rejects them. This positional keeps "--" here but
    // refuses every value, so the words after it take the prefix-command path above, in order.
    auto* command_words = sub->add_option("CMD", args->unused_positional, "Command and its arguments");
    command_words->check(CLI::Validator([](std::string&) { return std::string("taken as the command"); }, ""));
    sub->validate_positionals();
}

void set_run_callback(CommandContext& ctx, CLI::App* sub, const std::shared_ptr<ExecArgs>& args) {
    sub->callback([&ctx, args, sub] {
        args->run.process.command = sub->remaining();
        if (!args->run.process.command.empty() && args->run.process.command.front() == "--")
            args->run.process.command.erase(args->run.process.command.begin());
        ctx.run = [&ctx, args, sub] { return run_exec(ctx, *args, *sub); };
    });
}

}  // namespace

void add_exec_command(CLI::App& app, CommandContext& ctx) {
    auto args = std::make_shared<ExecArgs>();
    auto* sub = app.add_subcommand("exec", "Run a command in an image, for scripts (no terminal unless -it)");
    add_exec_options(sub, args);
    sub->footer("Usage: aishell exec [OPTIONS] [--] CMD [ARG...]");
    set_run_callback(ctx, sub, args);

    auto run_args = std::make_shared<ExecArgs>();
    run_args->mode = Mode::Run;
    auto* run = app.add_subcommand("run", "Run a command with the terminal attached (a shell when no command is given)");
    add_exec_options(run, run_args);
    run->footer("Usage: aishell run [OPTIONS] [--] [CMD [ARG...]]\n       aishell [OPTIONS]   (the same, a shell)");
    set_run_callback(ctx, run, run_args);
}

}  // namespace aishell::cli
