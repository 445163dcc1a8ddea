// Id mappings: choice of mode, /etc/subuid parsing, the meta text, and writing the maps.
#include "runtime/idmap.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <exception>

#include "common/error.hpp"
#include "common/file.hpp"
#include "runtime/host_check.hpp"

extern char** environ;

namespace aishell::runtime {

namespace fs = std::filesystem;

namespace {

// The setuid helpers are looked up in $PATH, as podman does (exec.LookPath("newuidmap")): a
// user's own PATH decides which one runs, and one that is not setuid can map nothing more
// than the user could alone.
std::string newidmap_path(const char* tool) {
    fs::path found = find_in_path(tool);
    return found.empty() ? std::string(tool) : found.string();
}

std::optional<std::uint32_t> parse_u32(std::string_view s) {
    std::uint32_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
    return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    for (;;) {
        auto pos = s.find(sep, start);
        out.push_back(s.substr(start, pos - start));
        if (pos == std::string_view::npos) break;
        start = pos + 1;
    }
    return out;
}

std::string ranges_text(const std::vector<IdRange>& ranges) {
    std::string out;
    for (const auto& r : ranges) {
        if (!out.empty()) out += ',';
        out += std::to_string(r.inside) + ':' + std::to_string(r.outside) + ':' + std::to_string(r.count);
    }
    return out;
}

std::vector<IdRange> parse_ranges(std::string_view text) {
    std::vector<IdRange> out;
    for (auto item : split(text, ',')) {
        auto f = split(item, ':');
        if (f.size() != 3) throw Error("bad id range '" + std::string(item) + "'");
        auto a = parse_u32(f[0]), b = parse_u32(f[1]), c = parse_u32(f[2]);
        if (!a || !b || !c || *c == 0) throw Error("bad id range '" + std::string(item) + "'");
        out.push_back({*a, *b, *c});
    }
    return out;
}

std::optional<std::uint32_t> to_inside(const std::vector<IdRange>& ranges, std::uint32_t host) {
    for (const auto& r : ranges)
        if (host >= r.outside && host - r.outside < r.count) return r.inside + (host - r.outside);
    return std::nullopt;
}

bool inside_mapped(const std::vector<IdRange>& ranges, std::uint32_t inside) {
    for (const auto& r : ranges)
        if (inside >= r.inside && inside - r.inside < r.count) return true;
    return false;
}

// The caller as container id `inside` in subuid mode, podman's --userns=keep-id:uid=N layout:
// container ids below and above it come from the sub range in order (0 = the first sub id).
// inside 0 gives the plain subuid mapping (0 = the caller, 1..N = the range).
std::vector<IdRange> caller_as_ranges(std::uint32_t inside, std::uint32_t caller, const IdRange& sub) {
    std::vector<IdRange> out;
    std::uint32_t below = std::min(inside, sub.count);
    if (below > 0) out.push_back({0, sub.outside, below});
    out.push_back({inside, caller, 1});
    // Ids above 2^32-2 do not exist (uid_map's last usable id is 4294967294).
    std::uint32_t room = inside >= 4294967294u ? 0 : 4294967294u - inside;
    std::uint32_t above = std::min(sub.count - below, room);
    if (above > 0) out.push_back({inside + 1, sub.outside + below, above});
    return out;
}

// "0 1000 1\n1 100000 65536\n" as the kernel wants it in uid_map.
std::string map_file_text(const std::vector<IdRange>& ranges) {
    std::string out;
    for (const auto& r : ranges)
        out += std::to_string(r.inside) + ' ' + std::to_string(r.outside) + ' ' + std::to_string(r.count) + '\n';
    return out;
}

void write_proc_file(pid_t pid, const char* name, const std::string& text) {
    auto path = "/proc/" + std::to_string(pid) + "/" + name;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_errno("open", path);
    // One write: the kernel accepts a map only in a single write(2) (user_namespaces(7)).
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        throw_errno("write", path);
}

// newuidmap PID inside outside count [...]: the setuid helper checks the ranges against
// /etc/subuid, which is what lets an unprivileged caller map more than its own id.
pid_t spawn_newidmap(const char* tool, pid_t pid, const std::vector<IdRange>& ranges) {
    std::vector<std::string> args{tool, std::to_string(pid)};
    for (const auto& r : ranges) {
        args.push_back(std::to_string(r.inside));
        args.push_back(std::to_string(r.outside));
        args.push_back(std::to_string(r.count));
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t child = 0;
    int rc = ::posix_spawn(&child, tool, nullptr, nullptr, argv.data(), environ);
    if (rc != 0) throw SystemError(rc, "run", tool);
    return child;
}

void wait_newidmap(const char* tool, pid_t child, pid_t pid) {
    int status = 0;
    while (::waitpid(child, &status, 0) < 0)
        if (errno != EINTR) throw_errno("wait for", tool);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error(std::string(tool) + " " + std::to_string(pid) + " failed (status " + std::to_string(status) + ")",
                    "check the caller's ranges in /etc/subuid and /etc/subgid, or set AISHELL_USERNS=single");
}

}  // namespace

std::string_view mode_name(UsernsMode mode) noexcept {
    switch (mode) {
        case UsernsMode::Subuid: return "subuid";
        case UsernsMode::Single: return "single";
        case UsernsMode::Root: return "root";
    }
    return "?";
}

std::string IdMapping::to_string() const {
    return std::string(mode_name(mode)) + " u=" + ranges_text(uids) + " g=" + ranges_text(gids);
}

IdMapping IdMapping::parse(std::string_view text) {
    auto parts = split(text, ' ');
    if (parts.size() != 3 || parts[1].substr(0, 2) != "u=" || parts[2].substr(0, 2) != "g=")
        throw Error("bad id mapping '" + std::string(text) + "'");
    IdMapping m;
    if (parts[0] == "subuid") m.mode = UsernsMode::Subuid;
    else if (parts[0] == "single") m.mode = UsernsMode::Single;
    else if (parts[0] == "root") m.mode = UsernsMode::Root;
    else throw Error("bad id mapping mode '" + std::string(parts[0]) + "'");
    m.uids = parse_ranges(parts[1].substr(2));
    m.gids = parse_ranges(parts[2].substr(2));
    return m;
}

std::optional<std::uint32_t> IdMapping::uid_inside(std::uint32_t host) const { return to_inside(uids, host); }
std::optional<std::uint32_t> IdMapping::gid_inside(std::uint32_t host) const { return to_inside(gids, host); }
bool IdMapping::uid_mapped_inside(std::uint32_t inside) const { return inside_mapped(uids, inside); }
bool IdMapping::gid_mapped_inside(std::uint32_t inside) const { return inside_mapped(gids, inside); }

std::optional<IdRange> find_subid_range(std::string_view content, std::string_view user_name, std::uint32_t uid) {
    const auto uid_text = std::to_string(uid);
    for (auto line : split(content, '\n')) {
        if (line.empty() || line.front() == '#') continue;
        auto f = split(line, ':');
        if (f.size() != 3) continue;
        if (f[0] != user_name && f[0] != uid_text) continue;
        auto start = parse_u32(f[1]), count = parse_u32(f[2]);
        if (!start || !count || *count == 0) continue;
        return IdRange{1, *start, *count};
    }
    return std::nullopt;
}

HostIds probe_host() {
    HostIds h;
    h.uid = ::getuid();
    h.gid = ::getgid();
    if (const passwd* pw = ::getpwuid(h.uid)) h.user_name = pw->pw_name;  // not in a child: fine
    if (auto text = read_file_if_exists("/etc/subuid", 1 << 20)) h.subuid = find_subid_range(*text, h.user_name, h.uid);
    if (auto text = read_file_if_exists("/etc/subgid", 1 << 20)) h.subgid = find_subid_range(*text, h.user_name, h.uid);
    h.have_newidmap = !find_in_path("newuidmap").empty() && !find_in_path("newgidmap").empty();
    h.forced = get_env("AISHELL_USERNS").value_or("");
    return h;
}

IdMapping choose_mapping(const HostIds& host, bool keep_id) {
    if (keep_id) return choose_mapping_as(host, host.uid, host.gid);
    return choose_mapping_as(host, 0, 0);
}

IdMapping choose_mapping_as(const HostIds& host, std::uint32_t uid, std::uint32_t gid) {
    if (!host.forced.empty() && host.forced != "subuid" && host.forced != "single")
        throw Error("AISHELL_USERNS=" + host.forced + " is not a user namespace mode", "use subuid or single");
    IdMapping m;
    if (host.uid == 0) {
        // Real root: the identity mapping of the whole id space, as rootful podman. The user
        // namespace still confines capabilities to the container's own namespaces.
        m.mode = UsernsMode::Root;
        m.uids = {{0, 0, 4294967295u}};
        m.gids = {{0, 0, 4294967295u}};
        return m;
    }
    const bool can_subuid = host.subuid && host.subgid && host.have_newidmap;
    bool subuid = host.forced == "subuid" || (host.forced.empty() && can_subuid);
    if (subuid && !can_subuid)
        throw Error("AISHELL_USERNS=subuid but " +
                        std::string(!host.have_newidmap ? "newuidmap/newgidmap are not installed"
                                                        : "user " + host.user_name + " has no /etc/subuid and /etc/subgid range"),
                    "install uidmap and add a range (usermod --add-subuids 100000-165535), or use AISHELL_USERNS=single");
    if (subuid) {
        m.mode = UsernsMode::Subuid;
        m.uids = caller_as_ranges(uid, host.uid, *host.subuid);
        m.gids = caller_as_ranges(gid, host.gid, *host.subgid);
        return m;
    }
    m.mode = UsernsMode::Single;
    m.uids = {{uid, host.uid, 1}};
    m.gids = {{gid, host.gid, 1}};
    return m;
}

void check_store_mapping(const std::optional<std::string>& recorded, const IdMapping& wanted) {
    if (!recorded || *recorded == wanted.to_string()) return;
    throw Error("this store's layers are owned for id mapping '" + *recorded + "', but this run would use '" +
                    wanted.to_string() + "'",
                "run as the user (and with the AISHELL_USERNS) that created the store, or use another store (--store)");
}

void write_id_maps(pid_t pid, const IdMapping& mapping) {
    if (mapping.mode == UsernsMode::Subuid) {
        // Both setuid helpers at once (they write different files): one helper's start-up
        // latency instead of two on every container start.
        const std::string newuidmap = newidmap_path("newuidmap"), newgidmap = newidmap_path("newgidmap");
        pid_t uid_helper = spawn_newidmap(newuidmap.c_str(), pid, mapping.uids);
        pid_t gid_helper = -1;
        try {
            gid_helper = spawn_newidmap(newgidmap.c_str(), pid, mapping.gids);
        } catch (...) {
            int st;
            while (::waitpid(uid_helper, &st, 0) < 0 && errno == EINTR) {}
            throw;
        }
        std::exception_ptr first_error;
        try {
            wait_newidmap(newuidmap.c_str(), uid_helper, pid);
        } catch (...) {
            first_error = std::current_exception();
        }
        try {
            wait_newidmap(newgidmap.c_str(), gid_helper, pid);
        } catch (...) {
            if (!first_error) first_error = std::current_exception();
        }
        if (first_error) std::rethrow_exception(first_error);
        return;
    }
    // An unprivileged process may write a one-id gid_map only after denying setgroups(2)
    // (user_namespaces(7), since Linux 3.19).
    if (mapping.mode == UsernsMode::Single) write_proc_file(pid, "setgroups", "deny");
    write_proc_file(pid, "uid_map", map_file_text(mapping.uids));
    write_proc_file(pid, "gid_map", map_file_text(mapping.gids));
}

}  // namespace aishell::runtime
