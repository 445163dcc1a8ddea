// `aishell check [--json]`: what is there (foundation, base, this project's image, the store and
// what a prune would reclaim), how runs will map ids and why, whether the kernel gives what runs
// need (user namespaces, overlayfs with userxattr, seccomp user notification), and for each
// problem the fix. Exit status 1 when something blocks running, 0 otherwise. Nothing is built,
// pulled or written: a store that does not exist yet is not created.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "cli/store_commands.hpp"
#include "cli/format.hpp"
#include "common/error.hpp"
#include "common/disk_usage.hpp"
#include "common/file.hpp"
#include "composer/build_config.hpp"
#include "composer/chain.hpp"
#include "composer/chain_names.hpp"
#include "composer/prune.hpp"
#include "oci/json_text.hpp"
#include "runtime/host_check.hpp"
#include "runtime/idmap.hpp"

namespace aishell::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct CheckOptions {
    bool json = false;
};

// A finding with its fix. Problems block running (exit 1); notes do not.
struct Finding {
    std::string what, fix;
};

struct Report {
    json facts = json::object();
    std::vector<Finding> problems, notes;
    void problem(std::string what, std::string fix) { problems.push_back({std::move(what), std::move(fix)}); }
    void note(std::string what, std::string fix) { notes.push_back({std::move(what), std::move(fix)}); }
};

// ---- store and images ------------------------------------------------------------------------

// The store, when there is one (check never creates it); a store that is refused is a problem.
std::optional<oci::Store> open_existing_store(const GlobalOptions& global, Report& r) {
    const fs::path root = store_root(global);
    r.facts["store"] = {{"path", root.string()}, {"exists", fs::exists(root / "version")}};
    if (!fs::exists(root / "version")) {
        r.problem("no store at " + root.string() + " yet", "aishell setup");
        return std::nullopt;
    }
    try {
        return open_store(global);
    } catch (const Error& e) {
        r.problem(e.message(), e.hint());
        return std::nullopt;
    }
}

void check_store_usage(oci::Store& store, Report& r) {
    r.facts["store"]["size"] = disk_usage(store.root());
    try {
        r.facts["store"]["reclaimable"] = composer::prune_store(store, {.volumes = false, .dry_run = true}).bytes();
    } catch (const Error& e) {
        r.problem("the store cannot be collected: " + e.message(), e.hint());
    }
}

void check_foundation(const oci::Store& store, Report& r) {
    auto entry = store.find_image(composer::kFoundationImage);
    if (!entry) {
        r.facts["foundation"] = nullptr;
        r.problem("no foundation image (aishell:foundation)", "aishell setup");
        return;
    }
    json f = {{"reference", store.get_meta(kFoundationReferenceMeta).value_or("")},
              {"digest", entry->descriptor.digest.str()}};
    if (auto pulled = store.get_meta(kFoundationPulledMeta)) {
        f["pulled"] = *pulled;
    } else {
        // A store set up before setup recorded the time: the manifest blob was written by the
        // first pull (blobs are never rewritten), later re-pulls of the same manifest unseen.
        struct stat st {};
        if (::stat(store.blob_path(entry->descriptor.digest).c_str(), &st) == 0)
            f["pulled"] = composer::rfc3339(st.st_mtime);
    }
    r.facts["foundation"] = f;
}

// The base and this project's ext: which they are and whether the next run builds them, and
// why (composer::chain_status: the chain's own freshness test, run without writing anything).
json tier_json(const composer::TierStatus& t, const fs::path& dockerfile) {
    json j = {{"name", t.name},
              {"digest", t.manifest ? json(t.manifest->str()) : json(nullptr)},
              {"dockerfile", dockerfile.empty() ? json(nullptr) : json(dockerfile.string())},
              {"upToDate", !t.stale},
              {"reasons", t.reasons}};
    if (!t.error.empty()) j["error"] = t.error;
    return j;
}

void tier_problem(const composer::TierStatus& t, const fs::path& dockerfile, Report& r) {
    if (t.error.empty()) return;
    r.problem("the next run cannot build " + t.name + ": " + t.error,
              t.error_hint.empty() ? "fix " + dockerfile.string() : t.error_hint);
}

void check_chain(const oci::Store& store, Report& r) {
    composer::ChainStatus st;
    try {
        st = composer::chain_status(store, fs::current_path(), {});
    } catch (const Error& e) {
        r.problem("the image chain cannot be checked: " + e.message(), e.hint());
        return;
    }
    json base = tier_json(st.base, st.base_dockerfile);
    base["custom"] = st.custom_base;
    r.facts["base"] = base;
    tier_problem(st.base, st.base_dockerfile, r);
    json project = {{"path", st.project.string()}, {"ext", nullptr}};
    if (st.ext) {
        project["ext"] = tier_json(*st.ext, st.ext_dockerfile);
        tier_problem(*st.ext, st.ext_dockerfile, r);
    }
    r.facts["project"] = project;
}

// "up to date", or "stale (why; why): the next run <does what>".
std::string freshness(const json& tier, const std::string& next_run) {
    if (tier["upToDate"].get<bool>()) return "up to date";
    std::string why;
    for (const auto& reason : tier["reasons"]) why += (why.empty() ? "" : "; ") + reason.get<std::string>();
    if (tier.contains("error")) why += (why.empty() ? "" : "; ") + std::string("cannot be read");
    return "stale (" + why + "): the next run " + next_run;
}

void print_chain(const json& f) {
    if (f.contains("base")) {
        const json& b = f["base"];
        const bool custom = b["custom"].get<bool>();
        std::cout << (custom ? "Base image: custom (~/.aishell/Dockerfile), " : "Base image: default (foundation alias), ")
                  << freshness(b, custom ? "rebuilds it" : "points it at the foundation") << "\n";
    }
    if (f.contains("project")) {
        const json& p = f["project"];
        std::cout << "Project: " << p["path"].get<std::string>() << "\n";
        if (p["ext"].is_null())
            std::cout << "Project image: none (no .aishell/Dockerfile: runs aishell:base)\n";
        else
            std::cout << "Project image: " << p["ext"]["name"].get<std::string>() << " ("
                      << p["ext"]["dockerfile"].get<std::string>() << "), " << freshness(p["ext"], "rebuilds it") << "\n";
    }
}

// ---- user namespaces and the kernel ----------------------------------------------------------

// Which mode runs use and why; what is missing for subuid mode is a note with its fix.
void check_userns_mode(const std::optional<oci::Store>& store, Report& r) {
    const runtime::HostIds host = runtime::probe_host();
    const fs::path newuidmap = runtime::find_in_path("newuidmap"), newgidmap = runtime::find_in_path("newgidmap");
    json u = json::object();
    runtime::IdMapping mapping;
    try {
        mapping = runtime::choose_mapping(host, false);
    } catch (const Error& e) {
        r.problem(e.message(), e.hint());
        r.facts["userns"] = {{"mode", nullptr}, {"why", e.message()}};
        return;
    }
    u["mode"] = std::string(runtime::mode_name(mapping.mode));
    u["mapping"] = mapping.to_string();
    std::vector<std::string> missing;
    if (!host.subuid) missing.push_back("no /etc/subuid range for " + host.user_name);
    if (!host.subgid) missing.push_back("no /etc/subgid range for " + host.user_name);
    if (newuidmap.empty()) missing.push_back("newuidmap not found in PATH");
    if (newgidmap.empty()) missing.push_back("newgidmap not found in PATH");
    std::string why;
    if (mapping.mode == runtime::UsernsMode::Root) {
        why = "aishell runs as root: every id maps to itself";
    } else if (!host.forced.empty()) {
        why = "AISHELL_USERNS=" + host.forced;
    } else if (mapping.mode == runtime::UsernsMode::Subuid) {
        why = newuidmap.string() + " and " + newgidmap.string() + " with the ranges " +
              std::to_string(host.subuid->outside) + ":" + std::to_string(host.subuid->count) + " (/etc/subuid) and " +
              std::to_string(host.subgid->outside) + ":" + std::to_string(host.subgid->count) + " (/etc/subgid) of " +
              host.user_name;
    } else {
        for (const auto& m : missing) why += (why.empty() ? "" : "; ") + m;
    }
    u["why"] = why;
    u["missing"] = missing;
    r.facts["userns"] = u;
    if (mapping.mode == runtime::UsernsMode::Single && host.forced.empty()) {
        if (!host.subuid || !host.subgid)
            r.note("single mode: only your own id is mapped (" + why + ")",
                   "for subuid mode: sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 " + host.user_name +
                       " (a range no other user has)");
        if (newuidmap.empty() || newgidmap.empty())
            r.note("single mode: newuidmap/newgidmap not found in PATH", "for subuid mode: sudo apt-get install uidmap");
    }
    if (store && mapping.mode != runtime::UsernsMode::Root) {
        try {
            runtime::check_store_mapping(store->get_meta("idmap"), mapping);
        } catch (const Error& e) {
            r.problem(e.message(), e.hint());
        }
    }
}

// Where the overlay probe makes its directories: the store's tmp/ (the filesystem that matters),
// else the nearest directory above the store that exists.
fs::path probe_dir(const std::optional<oci::Store>& store, const GlobalOptions& global) {
    if (store) return store->tmp_dir();
    fs::path p = store_root(global);
    while (!fs::is_directory(p) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
    return p;
}

void check_kernel(const std::optional<oci::Store>& store, const GlobalOptions& global, Report& r) {
    const runtime::HostFacts host = runtime::probe_host_facts();
    const bool kernel_ok = host.kernel_major > 5 || (host.kernel_major == 5 && host.kernel_minor >= 11);
    r.facts["kernel"] = {{"release", host.kernel_release}, {"supported", kernel_ok}};
    if (!kernel_ok)
        r.problem("Linux " + host.kernel_release + " is too old: overlayfs in a user namespace needs 5.11",
                  "run a kernel of 5.11 or newer");
    r.facts["seccompUserNotification"] = host.seccomp_user_notif;
    if (!host.seccomp_user_notif)
        r.note("seccomp user notification is not available (Linux 5.0): single-mode builds cannot emulate chown",
               "a kernel of 5.0 or newer, or subuid mode");

    runtime::NamespaceProbe probe;
    try {
        probe = runtime::probe_namespaces(probe_dir(store, global));
    } catch (const Error& e) {
        probe.failed_step = e.message();
    }
    json sysctls = json::object();
    if (host.apparmor_restrict_userns) sysctls["kernel.apparmor_restrict_unprivileged_userns"] = *host.apparmor_restrict_userns;
    if (host.max_user_namespaces) sysctls["user.max_user_namespaces"] = *host.max_user_namespaces;
    if (host.unprivileged_userns_clone) sysctls["kernel.unprivileged_userns_clone"] = *host.unprivileged_userns_clone;
    r.facts["userNamespaces"] = {{"work", probe.userns}, {"sysctls", sysctls}};
    r.facts["overlayUserxattr"] = probe.overlay;
    if (!probe.userns) {
        runtime::HostProblem f = runtime::userns_problem(probe, host);
        r.problem(f.what, f.fix);
    } else if (!probe.overlay) {
        r.problem("overlayfs with userxattr cannot be mounted in a user namespace on " + probe_dir(store, global).string() +
                      " (" + probe.failed_step + ": " + std::strerror(probe.error) + ")",
                  kernel_ok ? "put the store on a local filesystem such as ext4, xfs or btrfs (--store DIR or AISHELL_STORE)"
                            : "run a kernel of 5.11 or newer");
    }
}

// ---- output ---------------------------------------------------------------------------------

json findings_json(const std::vector<Finding>& findings) {
    json out = json::array();
    for (const auto& f : findings) out.push_back({{"problem", f.what}, {"fix", f.fix}});
    return out;
}

std::string yes_no(bool b, const char* yes, const char* no) { return b ? yes : no; }

void print_text(const Report& r) {
    const json& f = r.facts;
    std::cout << "Store: " << f["store"]["path"].get<std::string>();
    if (f["store"].contains("size")) {
        std::cout << " (" << human_size(f["store"]["size"].get<std::int64_t>());
        if (f["store"].contains("reclaimable"))
            std::cout << "; `aishell volumes prune` would reclaim " << human_size(f["store"]["reclaimable"].get<std::int64_t>());
        std::cout << ")";
    } else if (!f["store"]["exists"].get<bool>()) {
        std::cout << " (not created yet)";
    }
    std::cout << "\n";
    if (f.contains("foundation")) {
        if (f["foundation"].is_null()) {
            std::cout << "Foundation: none\n";
        } else {
            std::cout << "Foundation: " << f["foundation"]["reference"].get<std::string>() << " ("
                      << f["foundation"]["digest"].get<std::string>();
            if (f["foundation"].contains("pulled")) std::cout << ", pulled " << f["foundation"]["pulled"].get<std::string>();
            std::cout << ")\n";
        }
    }
    print_chain(f);
    if (f.contains("userns") && !f["userns"]["mode"].is_null())
        std::cout << "User namespace mode: " << f["userns"]["mode"].get<std::string>() << " ("
                  << f["userns"]["why"].get<std::string>() << ")\n";
    std::cout << "User namespaces: " << yes_no(f["userNamespaces"]["work"].get<bool>(), "work", "blocked") << "\n"
              << "Overlayfs with userxattr: " << yes_no(f["overlayUserxattr"].get<bool>(), "works", "does not work") << "\n"
              << "Seccomp user notification: "
              << yes_no(f["seccompUserNotification"].get<bool>(), "available", "not available") << "\n"
              << "Kernel: " << f["kernel"]["release"].get<std::string>() << "\n";
    for (const auto& n : r.notes) std::cout << "Note: " << n.what << "\n  fix: " << n.fix << "\n";
    for (const auto& p : r.problems) std::cout << "Problem: " << p.what << "\n  fix: " << p.fix << "\n";
    std::cout << (r.problems.empty() ? "No problems found.\n" : "Runs are blocked until the problems above are fixed.\n");
}

int run_check(const CommandContext& ctx, const CheckOptions& o) {
    Report r;
    std::optional<oci::Store> store = open_existing_store(ctx.global, r);
    if (store) {
        check_foundation(*store, r);
        check_chain(*store, r);
        check_store_usage(*store, r);
    }
    check_userns_mode(store, r);
    check_kernel(store, ctx.global, r);
    if (o.json) {
        json out = r.facts;
        out["problems"] = findings_json(r.problems);
        out["notes"] = findings_json(r.notes);
        out["ok"] = r.problems.empty();
        std::cout << oci::json_document(out, 2) << '\n';
    } else {
        print_text(r);
    }
    return r.problems.empty() ? 0 : 1;
}

}  // namespace

void add_check_command(CLI::App& app, CommandContext& ctx) {
    auto [cmd, o] = add_command<CheckOptions>(
        app, ctx, "check", "Show the images, the user namespace mode and what the host allows; say how to fix problems",
        run_check);
    cmd->add_flag("--json", o->json, "Print JSON");
}

}  // namespace aishell::cli
