// Building the container's process (see process.hpp).
#include "runtime/process.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <sstream>

#include "common/error.hpp"
#include "common/parse_number.hpp"
#include "common/file.hpp"

namespace aishell::runtime {

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string item;
    std::istringstream in(s);
    while (std::getline(in, item, sep)) out.push_back(item);
    if (!s.empty() && s.back() == sep) out.emplace_back();
    return out;
}

std::optional<std::uint32_t> number(const std::string& s) { return to_number<std::uint32_t>(s); }

struct PasswdEntry {
    std::string name;
    std::uint32_t uid = 0, gid = 0;
    std::string home;
};

std::vector<PasswdEntry> parse_passwd(const std::optional<std::string>& text) {
    std::vector<PasswdEntry> out;
    if (!text) return out;
    for (const auto& line : split(*text, '\n')) {
        auto f = split(line, ':');
        if (f.size() < 6) continue;
        auto uid = number(f[2]), gid = number(f[3]);
        if (!uid || !gid) continue;
        out.push_back({f[0], *uid, *gid, f[5]});
    }
    return out;
}

struct GroupEntry {
    std::string name;
    std::uint32_t gid = 0;
    std::vector<std::string> members;
};

std::vector<GroupEntry> parse_group(const std::optional<std::string>& text) {
    std::vector<GroupEntry> out;
    if (!text) return out;
    for (const auto& line : split(*text, '\n')) {
        auto f = split(line, ':');
        if (f.size() < 3) continue;
        auto gid = number(f[2]);
        if (!gid) continue;
        out.push_back({f[0], *gid, f.size() > 3 && !f[3].empty() ? split(f[3], ',') : std::vector<std::string>{}});
    }
    return out;
}

std::string env_key(const std::string& kv) { return kv.substr(0, kv.find('=')); }

void set_env(std::vector<std::string>& env, const std::string& kv) {
    auto key = env_key(kv);
    auto it = std::find_if(env.begin(), env.end(), [&](const std::string& e) { return env_key(e) == key; });
    if (it != env.end()) *it = kv;
    else env.push_back(kv);
}

std::optional<std::string> get(const std::vector<std::string>& env, const std::string& key) {
    for (const auto& e : env)
        if (env_key(e) == key) return e.size() > key.size() ? e.substr(key.size() + 1) : std::string();
    return std::nullopt;
}

}  // namespace

ResolvedUser resolve_user(const std::string& spec, const UserDb& db) {
    auto users = parse_passwd(db.passwd);
    auto groups = parse_group(db.group);
    auto colon = spec.find(':');
    std::string user_part = spec.substr(0, colon);
    std::optional<std::string> group_part;
    if (colon != std::string::npos) group_part = spec.substr(colon + 1);

    ResolvedUser r;
    const PasswdEntry* entry = nullptr;
    if (auto uid = number(user_part)) {
        r.uid = *uid;
        for (const auto& u : users)
            if (u.uid == *uid) { entry = &u; break; }
    } else {
        for (const auto& u : users)
            if (u.name == user_part) { entry = &u; break; }
        if (!entry) throw Error("user '" + user_part + "' not found in the image's /etc/passwd");
        r.uid = entry->uid;
    }
    if (entry) {
        r.gid = entry->gid;
        r.name = entry->name;
        r.home = entry->home.empty() ? "/" : entry->home;
    }
    if (group_part) {
        if (auto gid = number(*group_part)) {
            r.gid = *gid;
        } else {
            auto it = std::find_if(groups.begin(), groups.end(), [&](const GroupEntry& g) { return g.name == *group_part; });
            if (it == groups.end()) throw Error("group '" + *group_part + "' not found in the image's /etc/group");
            r.gid = it->gid;
        }
    } else if (!r.name.empty()) {
        // Supplementary groups, as initgroups(3) would find them.
        for (const auto& g : groups)
            if (std::find(g.members.begin(), g.members.end(), r.name) != g.members.end() && g.gid != r.gid)
                r.groups.push_back(g.gid);
    }
    return r;
}

ResolvedUser resolve_file_owner(const std::string& spec, const UserDb& db) {
    auto colon = spec.find(':');
    const std::string user_part = spec.substr(0, colon);
    ResolvedUser r;
    if (auto uid = number(user_part)) {
        r.uid = r.gid = *uid;
    } else {
        for (const auto& u : parse_passwd(db.passwd))
            if (u.name == user_part) {
                r.uid = u.uid;
                r.gid = u.gid;
                break;
            }
    }
    if (colon == std::string::npos) return r;
    const std::string group_part = spec.substr(colon + 1);
    if (auto gid = number(group_part)) {
        r.gid = *gid;
        return r;
    }
    for (const auto& g : parse_group(db.group))
        if (g.name == group_part) {
            r.gid = g.gid;
            break;
        }
    return r;
}

std::optional<std::string> read_layered_file(const std::filesystem::path& layers_dir,
                                             const std::vector<std::string>& layers, const std::string& path) {
    std::string rel = path.front() == '/' ? path.substr(1) : path;
    for (const auto& l : layers) {
        auto p = layers_dir / l / rel;
        struct stat st {};
        if (::lstat(p.c_str(), &st) != 0) continue;
        if (S_ISCHR(st.st_mode) && st.st_rdev == 0) return std::nullopt;  // whiteout
        if (!S_ISREG(st.st_mode)) return std::nullopt;
        return read_file(p, 16 * 1024 * 1024);
    }
    return std::nullopt;
}

HostUser current_host_user() {
    HostUser u;
    u.uid = ::getuid();
    u.gid = ::getgid();
    if (const passwd* pw = ::getpwuid(u.uid)) {
        u.name = pw->pw_name;
        u.home = pw->pw_dir;
        if (pw->pw_shell && *pw->pw_shell) u.shell = pw->pw_shell;
    } else {
        u.name = "user" + std::to_string(u.uid);
        u.home = "/home/" + u.name;
    }
    return u;
}

std::vector<std::string> complete_path(std::vector<std::string>& env) {
    if (!get(env, "PATH")) env.push_back(std::string("PATH=") + kDefaultPath);
    std::vector<std::string> dirs;
    for (const auto& d : split(*get(env, "PATH"), ':'))
        if (!d.empty()) dirs.push_back(d);
    return dirs;
}

ProcessSpec build_process(const oci::ImageConfig& config, const ProcessOptions& opts, const UserDb& db,
                          const std::optional<HostUser>& keep_id_user, const ExecutableProbe& has_executable) {
    ProcessSpec p;
    // Identity.
    ResolvedUser user;
    std::string user_spec = opts.user.value_or(config.user());
    if (keep_id_user && !opts.user) {
        auto users = parse_passwd(db.passwd);
        bool known = std::any_of(users.begin(), users.end(), [&](const PasswdEntry& e) { return e.uid == keep_id_user->uid; });
        user.uid = keep_id_user->uid;
        user.gid = keep_id_user->gid;
        user.name = keep_id_user->name;
        user.home = keep_id_user->home;
        if (!known)
            p.passwd_line = keep_id_user->name + ":x:" + std::to_string(user.uid) + ":" + std::to_string(user.gid) + "::" +
                            user.home + ":" + keep_id_user->shell + "\n";
        else
            user = resolve_user(std::to_string(keep_id_user->uid), db);
        p.create_home = user.home;
    } else {
        user = resolve_user(user_spec.empty() ? "0" : user_spec, db);
        if (user.name.empty() && user.uid == 0) user.home = "/root";
    }
    p.uid = user.uid;
    p.gid = user.gid;
    p.groups = user.groups;

    // Environment: image, then the host's passthrough (as podman puts its proxy variables over
    // the image's), then -e; then defaults for what is still unset.
    p.env = config.env();
    for (const auto& e : opts.host_env) set_env(p.env, e);
    for (const auto& e : opts.env) {
        if (e.find('=') != std::string::npos) set_env(p.env, e);
        else if (auto v = get_env(e.c_str())) set_env(p.env, e + "=" + *v);
    }
    p.path_dirs = complete_path(p.env);
    if (!get(p.env, "HOSTNAME")) p.env.push_back("HOSTNAME=" + opts.hostname);
    if (!get(p.env, "HOME")) p.env.push_back("HOME=" + user.home);
    if (opts.tty && !get(p.env, "TERM")) p.env.push_back("TERM=xterm");

    // argv: Entrypoint + Cmd; --entrypoint replaces the first and drops the image's Cmd.
    std::vector<std::string> entry = config.entrypoint();
    std::vector<std::string> cmd = config.cmd();
    if (opts.entrypoint) {
        entry = opts.entrypoint->empty() ? std::vector<std::string>{} : std::vector<std::string>{*opts.entrypoint};
        cmd.clear();
    }
    if (!opts.command.empty()) cmd = opts.command;
    else if (opts.default_shell) cmd = {has_executable && has_executable("bash", p.path_dirs) ? "bash" : "sh"};
    p.argv = entry;
    p.argv.insert(p.argv.end(), cmd.begin(), cmd.end());

    p.cwd = opts.workdir.value_or(config.working_dir());
    if (p.cwd.empty()) p.cwd = "/";
    if (p.cwd.front() != '/') throw Error("working directory '" + p.cwd + "' is not absolute");
    return p;
}

}  // namespace aishell::runtime
