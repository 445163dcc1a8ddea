// The RUN step (see build_run_step.hpp).
#include "composer/build_run_step.hpp"

#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <set>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "runtime/capabilities.hpp"
#include "runtime/launch.hpp"
#include "runtime/mounts.hpp"
#include "runtime/seccomp.hpp"

namespace aishell::composer {

namespace fs = std::filesystem;

namespace {

// Redirects stdout and stderr into a file while a quiet build runs a step; shows it on failure.
class QuietOutput {
public:
    explicit QuietOutput(bool quiet) {
        if (!quiet) return;
        char tmpl[] = "/tmp/aishell-build-XXXXXX";
        file_ = UniqueFd(::mkstemp(tmpl));
        if (!file_) return;
        ::unlink(tmpl);
        std::cout.flush();
        std::cerr.flush();
        saved_out_ = UniqueFd(::dup(1));
        saved_err_ = UniqueFd(::dup(2));
        ::dup2(file_.get(), 1);
        ::dup2(file_.get(), 2);
    }
    QuietOutput(const QuietOutput&) = delete;
    QuietOutput& operator=(const QuietOutput&) = delete;
    ~QuietOutput() { restore(); }
    void restore() {
        if (!saved_out_) return;
        ::dup2(saved_out_.get(), 1);
        ::dup2(saved_err_.get(), 2);
        saved_out_.reset();
        saved_err_.reset();
    }
    void show() {
        restore();
        if (!file_) return;
        ::lseek(file_.get(), 0, SEEK_SET);
        char buf[8192];
        ssize_t n;
        while ((n = ::read(file_.get(), buf, sizeof buf)) > 0) (void)!::write(2, buf, static_cast<std::size_t>(n));
    }

private:
    UniqueFd file_, saved_out_, saved_err_;
};

std::string joined_words(const std::vector<std::string>& words) {
    std::string text;
    for (const auto& a : words) text += (text.empty() ? "" : " ") + a;
    return text;
}

// The mounts of the container: the runtime's plan plus the RUN --mount session's, and the
// mountpoints the runtime may create in the upper dir, removed before the commit (BuildKit's
// MountStubsCleaner: resolv.conf, hosts and every mount target; here also /proc, /dev and
// /sys, which an image without them gets from the runtime).
std::vector<std::string> plan_container_mounts(runtime::ContainerSpec& spec, const std::optional<MountSession>& session) {
    runtime::MountPlanInput mi;
    mi.host_network = spec.network == runtime::Network::Host;
    mi.gid5_mapped = spec.mapping.gid_mapped_inside(5);
    std::vector<std::string> stubs{"/proc", "/dev", "/sys"};
    if (mi.host_network) stubs.insert(stubs.end(), {"/etc/resolv.conf", "/etc/hosts"});
    if (session) {
        mi.extra = session->steps();
        spec.process.env.insert(spec.process.env.end(), session->env().begin(), session->env().end());
        stubs.insert(stubs.end(), session->stub_targets().begin(), session->stub_targets().end());
    }
    spec.mounts = runtime::plan_mounts(mi);
    return stubs;
}

runtime::ContainerSpec container_spec(const RunStepInput& in) {
    runtime::ContainerSpec spec;
    spec.mapping = in.mapping;
    spec.layers_dir = in.store->layers_dir();
    spec.layers = in.layers;
    spec.network = in.network == "none" ? runtime::Network::None : runtime::Network::Host;
    spec.hostname = "buildkitsandbox";
    spec.run_dir = in.run_dir;
    spec.capabilities = runtime::default_capabilities();
    spec.seccomp = in.seccomp->program(spec.capabilities);
    return spec;
}

// The user stopped the build (the signal went to the command too): not a failed RUN. main()
// exits 128+N; the rollback and the work dir's removal run on the way out.
void check_result(const runtime::RunResult& result, const std::string& step, QuietOutput& quiet) {
    if (result.signal != 0)
        throw Interrupted(step + ": interrupted by " + signal_name(result.signal),
                          "the build stopped; nothing was tagged and the store is as it was", result.signal);
    if (result.status != 0) {
        quiet.show();
        std::string why = result.error.empty() ? "" : ": " + result.error;
        throw Error(step + ": the command returned exit status " + std::to_string(result.status) + why,
                    "the RUN step failed; its output is above");
    }
}

}  // namespace

std::vector<std::string> run_argv(const ImageState& s, const RunInstr& r) {
    if (r.command.exec_form) return r.command.args;
    std::string text = joined_words(r.command.args);
    std::vector<std::string> argv = shell_of(s);
    if (!r.heredocs.empty()) {
        std::string trimmed = text;
        trimmed.erase(0, trimmed.find_first_not_of(" \t"));
        trimmed.erase(trimmed.find_last_not_of(" \t") + 1);
        // A lone heredoc is the script itself; otherwise the shell reads the heredocs.
        if (r.heredocs.size() == 1 && parse_heredoc_word(trimmed)) {
            argv.push_back(r.heredocs[0].content);
            return argv;
        }
        for (const auto& h : r.heredocs) text += "\n" + h.content + h.name;
    }
    argv.push_back(text);
    return argv;
}

std::string run_history_text(const std::vector<std::string>& argv, bool exec_form) {
    if (exec_form) return "RUN " + json_words(argv);
    std::string text = "RUN";
    for (const auto& a : argv) text += " " + a;
    return text;
}

std::vector<std::string> run_environment(const ImageState& s, const std::map<std::string, std::string>& args,
                                         const std::map<std::string, std::string>& build_args) {
    std::vector<std::string> env = env_list(s);
    std::set<std::string> env_keys;
    for (const auto& e : env) env_keys.insert(e.substr(0, e.find('=')));
    for (const auto& [k, v] : args)
        if (!env_keys.count(k)) env.push_back(k + "=" + v);
    for (const auto& p : predefined_proxy_args())
        if (auto it = build_args.find(p); it != build_args.end() && !args.count(p)) env.push_back(p + "=" + it->second);
    return env;
}

RunProcess run_process(std::vector<std::string> argv, std::vector<std::string> env, const std::string& cwd,
                       const std::string& user, const runtime::UserDb& db, runtime::UsernsMode mode) {
    RunProcess r;
    runtime::ProcessSpec& p = r.process;
    p.argv = std::move(argv);
    p.env = std::move(env);
    p.path_dirs = runtime::complete_path(p.env);
    p.cwd = cwd.empty() ? "/" : cwd;
    const runtime::ResolvedUser u = runtime::resolve_user(user.empty() ? "0" : user, db);
    p.uid = u.uid;
    p.gid = u.gid;
    p.groups = u.groups;
    // HOME as runc's setupUser sets it when the environment has none: the user's home in the
    // image's /etc/passwd, "/" when the user has no entry there.
    if (std::none_of(p.env.begin(), p.env.end(), [](const std::string& e) { return e.rfind("HOME=", 0) == 0; }))
        p.env.push_back("HOME=" + u.home);
    // Single mode: root emulation (set*id, device mknod faked; chown owners recorded; apt as
    // root: runtime/fakeroot.hpp).
    if (mode == runtime::UsernsMode::Single) {
        r.emulate_root_ids = true;
        if (p.uid != 0 || p.gid != 0) {
            r.emulated_identity = runtime::EmulatedIdentity{p.uid, p.gid, {p.groups.begin(), p.groups.end()}};
            r.made_by = oci::LayerOwner{p.uid, p.gid};
            p.uid = p.gid = 0;
        }
        p.groups.clear();  // setgroups is denied
    }
    return r;
}

const std::vector<sock_filter>& SeccompCache::program(std::uint64_t caps) {
    if (program_ && caps_ == caps) return *program_;
    const std::string profile = runtime::default_seccomp_profile_text();
    const runtime::SeccompContext ctx = runtime::host_seccomp_context(caps);
    const fs::path entry = runtime::seccomp_cache_entry(dir_, profile, ctx);
    std::error_code ec;
    const bool had_dir = fs::exists(dir_, ec), had_entry = fs::exists(entry, ec);
    program_ = runtime::compile_seccomp_cached(dir_, profile, ctx);
    caps_ = caps;
    // A failed build leaves the store as it was: a new entry (and dir) goes with it.
    if (!had_entry && fs::exists(entry, ec)) added_(entry);
    if (!had_dir && fs::exists(dir_, ec)) added_(dir_);
    return *program_;
}

std::string signal_name(int sig) {
    if (const char* name = ::sigabbrev_np(sig)) return std::string("SIG") + name;
    return "signal " + std::to_string(sig);
}

RunCommit run_container_step(const RunStepInput& in) {
    runtime::ContainerSpec spec = container_spec(in);
    runtime::UserDb db{runtime::read_layered_file(spec.layers_dir, spec.layers, "/etc/passwd"),
                       runtime::read_layered_file(spec.layers_dir, spec.layers, "/etc/group")};
    RunProcess proc = run_process(in.argv, in.env, in.cwd, in.user, db, in.mapping.mode);
    spec.process = std::move(proc.process);
    spec.emulate_root_ids = proc.emulate_root_ids;
    spec.emulated_identity = proc.emulated_identity;
    // Held (locks, copies, secret files) until the RUN is over.
    std::optional<MountSession> session;
    if (!in.mounts->empty()) session.emplace(*in.mounts, *in.mount_inputs, spec.process.env);
    RunCommit commit{spec.layers, plan_container_mounts(spec, session), proc.made_by};
    QuietOutput quiet(in.quiet);
    runtime::RunResult result = runtime::run_container(spec);
    const std::string& argv_text = in.argv.size() > 2 ? in.argv.back() : json_words(in.argv);
    check_result(result, in.step_label + argv_text, quiet);
    quiet.restore();
    return commit;
}

}  // namespace aishell::composer
