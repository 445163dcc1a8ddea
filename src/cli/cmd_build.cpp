// `aishell build`: `--check` parses and validates a Dockerfile (and the context's .dockerignore)
// without running anything and prints the stages as parsed, as text or JSON. Building itself
// is the build engine's job, which is not there yet: without --check the command says so.
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "composer/dockerfile_json.hpp"
#include "composer/dockerignore.hpp"
#include "composer/instructions.hpp"
#include "oci/json_text.hpp"

namespace aishell::cli {

namespace {

struct BuildOptions {
    bool check = false;
    bool json = false;
    std::string file;  // -f; default CONTEXT/Dockerfile
    std::string context = ".";
    std::vector<std::string> build_args;  // K=V, or K to take the value from the environment
    std::string target;
    std::string platform;
    BuildEngineFlags engine;  // -t, --no-cache, --quiet, ... (cmd_build_helpers.cpp)
};

// --build-arg K=V; a bare K takes $K from the environment and is dropped when unset, as docker does.
std::map<std::string, std::string> parse_build_args(const std::vector<std::string>& raw) {
    std::map<std::string, std::string> out;
    for (const auto& arg : raw) {
        auto eq = arg.find('=');
        std::string name = arg.substr(0, eq);
        if (name.empty())
            throw Error("invalid --build-arg \"" + arg + "\": the name is empty", "write --build-arg NAME=VALUE");
        if (eq != std::string::npos) {
            out[name] = arg.substr(eq + 1);
        } else if (auto value = get_env(name.c_str())) {
            out[name] = *value;
        }
    }
    return out;
}

// -f FILE, else CONTEXT/Dockerfile, else CONTEXT/dockerfile (the docker CLI's fallback).
fs::path dockerfile_path(const BuildOptions& o) {
    if (!o.file.empty()) return o.file;
    fs::path context = o.context;
    std::error_code ec;
    if (!fs::exists(context / "Dockerfile", ec) && fs::exists(context / "dockerfile", ec))
        return context / "dockerfile";
    return context / "Dockerfile";
}

void check_context(const BuildOptions& o, const fs::path& dockerfile) {
    std::error_code ec;
    if (!fs::is_directory(o.context, ec))
        throw Error("build context " + o.context + " is not a directory", "aishell build [OPTIONS] CONTEXT_DIR");
    // A malformed .dockerignore fails a real build, so --check reports it too.
    if (auto ignore = composer::find_dockerignore(o.context, dockerfile)) {
        auto patterns = composer::read_dockerignore(read_file(*ignore, 4 * 1024 * 1024), ignore->string());
        (void)composer::IgnoreMatcher(patterns);
    }
}

int run_check(const BuildOptions& o) {
    const fs::path path = dockerfile_path(o);
    check_context(o, path);
    composer::Dockerfile df = composer::load_dockerfile(path.string());
    composer::CheckOptions options{parse_build_args(o.build_args), o.platform};
    const composer::Stage& target = composer::target_stage(df, o.target);
    if (o.json) {
        nlohmann::json j = composer::dockerfile_to_json(df, options);
        j["target"] = target.index;
        std::cout << oci::json_document(j, 2) << '\n';
        return 0;
    }
    std::cout << composer::dockerfile_to_text(df, options);
    std::cout << "target: stage " << target.index << (target.name.empty() ? "" : " \"" + target.name + "\"")
              << "\nok: " << path.string() << " is valid\n";
    return 0;
}

int run_build(const BuildOptions& o) {
    if (o.check) return run_check(o);
    return run_engine_build(o.engine, o.context, dockerfile_path(o).string(), parse_build_args(o.build_args), o.target,
                            o.platform);
}

}  // namespace

void add_build_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, o] = add_command<BuildOptions>(
        app, ctx, "build", "Build an image from a Dockerfile (--check: parse and validate only)",
        [](CommandContext&, const BuildOptions& options) { return run_build(options); });
    cmd->add_option("context", o->context, "Build context directory (default: .)");
    cmd->add_option("-f,--file", o->file, "Dockerfile (default: CONTEXT/Dockerfile)");
    cmd->add_flag("--check", o->check, "Parse and validate the Dockerfile without building; print its stages");
    cmd->add_flag("--json", o->json, "With --check: print the parse tree as JSON");
    cmd->add_option("--build-arg", o->build_args, "Build argument NAME=VALUE (repeatable)")->allow_extra_args(false);
    cmd->add_option("--target", o->target, "Stage to build (must exist)");
    cmd->add_option("--platform", o->platform, "Target platform os/arch[/variant] (sets TARGETPLATFORM and friends)");
    add_build_engine_options(*cmd, o->engine, ctx.global);
}

}  // namespace aishell::cli
