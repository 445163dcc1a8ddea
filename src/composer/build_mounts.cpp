// RUN --mount in the build engine (see build_mounts.hpp).
#include "composer/build_mounts.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <regex>
#include <set>

#include "common/error.hpp"
#include "common/resolve_path.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_copy.hpp"
#include "composer/build_step.hpp"
#include "composer/helpers.hpp"
#include "oci/digest.hpp"
#include "oci/json_text.hpp"
#include "runtime/reown.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- small helpers ---------------------------------------------------------------------------


std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// Clean absolute path ("/a/b"), "/" for the root; ".." cannot climb above "/".
std::string clean_abs(const std::string& p) {
    std::string out = fs::path("/" + p).lexically_normal().string();
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    if (out.rfind("/..", 0) == 0) out = clean_abs(out.substr(3));
    return out.empty() ? "/" : out;
}

std::vector<std::string> components(const std::string& abs) {
    std::vector<std::string> out;
    for (const auto& part : fs::path(abs).relative_path())
        if (!part.empty() && part != ".") out.push_back(part.string());
    return out;
}

// Opens path beneath rootfd as if rootfd were "/" (common/resolve_path.hpp).
UniqueFd open_in_root(int rootfd, const std::string& path, int flags) {
    return open_resolved(rootfd, path, flags, Resolve::InRoot);
}

std::string fd_real_path(int fd) {
    char buf[4096];
    std::string link = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    if (n < 0) throw_errno("readlink", link);
    return std::string(buf, static_cast<std::size_t>(n));
}

bool parse_bool(const std::string& key, const std::string& value) {
    static const std::set<std::string> yes = {"1", "t", "T", "TRUE", "true", "True"};
    static const std::set<std::string> no = {"0", "f", "F", "FALSE", "false", "False"};
    if (yes.count(value)) return true;
    if (no.count(value)) return false;
    throw Error("RUN --mount: invalid value for " + key + ": " + value, "use true or false");
}

std::uint32_t parse_id(const std::string& key, const std::string& value) {
    static const std::regex digits("^[0-9]{1,10}$");
    if (!std::regex_match(value, digits) || std::stoull(value) > 0xffffffffull)
        throw Error("RUN --mount: invalid " + key + " \"" + value + "\"", "a numeric id");
    return static_cast<std::uint32_t>(std::stoul(value));
}

mode_t parse_mode(const std::string& value) {
    static const std::regex octal("^[0-7]{1,11}$");
    if (!std::regex_match(value, octal))
        throw Error("RUN --mount: invalid mode \"" + value + "\"", "mode is octal, e.g. mode=0644");
    unsigned long long v = std::stoull(value, nullptr, 8);
    if (v > 07777) throw Error("RUN --mount: invalid mode \"" + value + "\"", "mode is at most 07777");
    return static_cast<mode_t>(v);
}

void hash_part(oci::Sha256& h, std::string_view s) {
    std::uint64_t n = s.size();
    h.update(&n, sizeof n);
    h.update(s);
}

// overlayfs options take ':' and ',' as separators.
void check_overlay_path(const std::string& p) {
    if (p.find_first_of(":,") != std::string::npos)
        throw Error("RUN --mount: the path " + p + " holds ':' or ',', which overlayfs options cannot carry",
                    "use a store path without those characters");
}

// ---- the userns helper -----------------------------------------------------------------------

void run_ops_in_userns(const oci::Store& store, const runtime::IdMapping& mapping, const json& ops,
                       const fs::path& work) {
    if (ops.empty()) return;
    fs::path spec = work / ("prepare-" + random_hex(8) + ".json");
    write_file_atomic(spec, oci::to_message(json{{"store", store.root().string()}, {"work", work.string()}, {"prepare", ops}}), 0600);
    int status = runtime::run_in_userns(mapping, kPrepareRunMounts, {spec.string()});
    ::unlink(spec.c_str());
    if (status != 0) {
        auto msg = read_file_if_exists(spec.string() + ".error", 1 << 16);
        ::unlink((spec.string() + ".error").c_str());
        throw Error(msg ? *msg : "preparing the RUN mounts failed (helper status " + std::to_string(status) + ")");
    }
}

}  // namespace

// ---- resolving a RUN's mounts ----------------------------------------------------------------

std::uint64_t parse_size_bytes(const std::string& text) {
    static const std::regex size("^([0-9]+(\\.[0-9]+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$");
    std::smatch m;
    // Length first: libstdc++'s regex recurses per character, and a few thousand digits would
    // overflow the stack (no size needs more than 32 characters).
    if (text.size() > 32 || !std::regex_match(text, m, size))
        throw Error("RUN --mount: invalid value for size: " + text, "e.g. size=64m or size=1g");
    // strtod, not stod: a value too large to be a double is HUGE_VAL here, not a std::out_of_range
    // whose what() ("stod") would be the user's whole error line.
    double v = std::strtod(m[1].str().c_str(), nullptr);
    int shift = 0;
    if (m[3].matched) shift = 10 * (1 + static_cast<int>(std::string("kmgtp").find(lower(m[3].str())[0])));
    const double bytes = v * std::ldexp(1.0, shift);
    if (!(bytes < 0x1p64)) throw Error("RUN --mount: invalid value for size: " + text, "at most 16 EiB");
    return static_cast<std::uint64_t>(bytes);
}

std::string BuildMount::spec() const {
    json j = {{"type", type},       {"target", target}, {"source", source}, {"from", from},
              {"id", id},           {"sharing", sharing}, {"readonly", readonly}, {"required", required}};
    if (mode) j["mode"] = *mode;
    if (uid) j["uid"] = *uid;
    if (gid) j["gid"] = *gid;
    if (size) j["size"] = *size;
    if (env) j["env"] = *env;
    return oci::json_key_text(j);
}

std::vector<BuildMount> resolve_mounts(const std::vector<RunMount>& mounts,
                                       const std::function<std::string(const std::string&)>& expand,
                                       const std::string& workdir) {
    std::vector<BuildMount> out;
    int ssh_index = 0;
    for (const auto& rm : mounts) {
        std::map<std::string, std::string> o;
        for (const auto& [k, v] : rm.options) o[k] = k == "from" ? v : expand(v);
        auto has = [&](const char* k) { return o.count(k) != 0; };
        BuildMount m;
        m.type = rm.type;
        if (has("target") && !o["target"].empty()) {
            std::string t = o["target"];
            if (t.front() != '/') t = (fs::path(workdir.empty() ? "/" : workdir) / t).string();
            m.target = clean_abs(t);
            if (m.target == "/") throw Error("RUN --mount: invalid mount target \"/\"", "mount on a directory below /");
        }
        if (has("readonly")) m.readonly = parse_bool("readonly", o["readonly"]);
        if (has("required")) m.required = parse_bool("required", o["required"]);
        if (has("mode")) m.mode = parse_mode(o["mode"]);
        if (has("uid")) m.uid = parse_id("uid", o["uid"]);
        if (has("gid")) m.gid = parse_id("gid", o["gid"]);
        if (has("from")) m.from = o["from"];
        if (has("env")) m.env = o["env"];
        if (m.type == "bind" || m.type == "cache") {
            if (has("source")) m.source = clean_abs(o["source"]);
            if (m.target.empty()) throw Error("RUN --mount type=" + m.type + " requires a target", "add target=/path");
        }
        if (m.type == "cache") {
            m.id = has("id") && !o["id"].empty() ? o["id"] : o["target"];
            if (has("sharing")) {
                m.sharing = lower(o["sharing"]);
                if (m.sharing != "shared" && m.sharing != "private" && m.sharing != "locked")
                    throw Error("RUN --mount: unsupported sharing value \"" + m.sharing + "\"", "use shared, private or locked");
            }
        } else if (m.type == "tmpfs") {
            if (m.target.empty()) throw Error("RUN --mount type=tmpfs requires a target", "add target=/path");
            if (has("size")) m.size = parse_size_bytes(o["size"]);
        } else if (m.type == "secret") {
            // convert_secrets.go: the id is source or id, else the target's base name; the file
            // goes to target, else /run/secrets/<id> unless the secret is only an env variable.
            m.id = has("source") ? o["source"] : has("id") ? o["id"] : "";
            if (m.id.empty() && !m.target.empty()) m.id = fs::path(m.target).filename().string();
            if (m.id.empty()) throw Error("RUN --mount: invalid secret mount. one of source, target required", "add id=NAME");
            if (m.target.empty() && !m.env)
                m.target = clean_abs("/run/secrets/" + fs::path(m.id).filename().string());
            if (m.env && m.env->empty()) throw Error("RUN --mount: env= names no variable", "write env=VAR");
        } else if (m.type == "ssh") {
            m.id = has("id") && !o["id"].empty() ? o["id"] : "default";
            if (m.target.empty()) m.target = "/run/buildkit/ssh_agent." + std::to_string(ssh_index);
            ++ssh_index;
        } else if (m.type != "bind") {
            throw Error("RUN --mount: unsupported mount type \"" + m.type + "\"", "use bind, cache, tmpfs, secret or ssh");
        }
        out.push_back(std::move(m));
    }
    return out;
}

std::string cache_mount_dir_name(const BuildMount& m, const std::string& from_key) {
    oci::Sha256 h;
    hash_part(h, "cache-mount-v1");
    hash_part(h, m.id);
    hash_part(h, from_key);
    // BuildKit seeds a cache with mode/uid/gid from its own small "settings" state, so other
    // settings are another cache; they apply only to the cache's root (no source subpath).
    std::string settings;
    if (m.source == "/" && (m.mode || m.uid || m.gid))
        settings = std::to_string(m.mode.value_or(0755)) + ":" + std::to_string(m.uid.value_or(0)) + ":" +
                   std::to_string(m.gid.value_or(0));
    hash_part(h, settings);
    return std::string(h.finish().encoded());
}

std::vector<std::string> mount_key_parts(const std::vector<BuildMount>& mounts, const MountInputs& in) {
    std::vector<std::string> parts;
    for (const auto& m : mounts) {
        parts.push_back("mount " + m.spec());
        if (m.type == "bind" && m.from.empty()) {
            UniqueFd ctx(::open(in.context.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            if (!ctx) throw_errno("open build context", in.context.string());
            CopyRequest req;
            req.sources = {m.source == "/" ? "." : m.source.substr(1)};
            req.instruction = "RUN --mount";
            try {
                parts.push_back(source_digest(ctx.get(), req, in.matcher).str());
            } catch (Error& e) {
                e.add_context("RUN --mount=type=bind,source=" + m.source + " (build context)");
                throw;
            }
        } else if ((m.type == "bind" || m.type == "cache") && !m.from.empty()) {
            parts.push_back("from " + in.from_key(m.from).str());
        }
    }
    return parts;
}

// ---- MountSession ----------------------------------------------------------------------------

namespace {

// The --secret or --ssh source a mount's id names (the last given with that id), nullptr for none.
template <typename Source>
const Source* source_by_id(const std::vector<Source>* sources, const std::string& id) {
    const Source* found = nullptr;
    if (sources)
        for (const auto& s : *sources)
            if (s.id == id) found = &s;
    return found;
}

}  // namespace

struct MountSession::Impl {
    const MountInputs& in;
    fs::path work;               // <store>/tmp/mnt-XXX: copies, overlay uppers, empty lowers
    fs::path secret_dir;         // a private dir on /dev/shm (never on disk) or under work
    std::vector<UniqueFd> locks; // cache instance locks, held while the RUN runs
    std::map<std::string, fs::path> caches;  // dir name -> instance data dir (one per step)
    std::set<fs::path> new_caches;           // data dirs this step creates (from data.tmp)
    json ops = json::array();    // in-namespace preparation
    std::vector<std::function<void()>> after_ops;
    std::vector<UniqueFd> init_locks;
    int counter = 0;

    explicit Impl(const MountInputs& inputs) : in(inputs) {
        work = in.store->tmp_dir() / ("mnt-" + random_hex(12));
        make_dirs(work, 0700);
    }

    ~Impl() {
        if (!secret_dir.empty()) {
            std::error_code ec;
            fs::remove_all(secret_dir, ec);
            if (ec) std::cerr << "aishell: warning: remove " << secret_dir.string() << ": " << ec.message() << "\n";
        }
        try {
            runtime::remove_tree(in.mapping, work.string());
        } catch (const std::exception& e) {
            std::cerr << "aishell: warning: " << e.what() << "\n";
        }
    }

    fs::path fresh(const std::string& what) { return work / (what + std::to_string(counter++)); }

    fs::path empty_dir() {
        fs::path p = fresh("empty");
        make_dirs(p, 0755);
        return p;
    }

    // lowerdir list (absolute, top first) of layer dir names; at least `min` entries.
    std::string lowerdirs(const std::vector<std::string>& layers, std::size_t min) {
        std::vector<std::string> dirs;
        for (const auto& l : layers) dirs.push_back((in.store->layers_dir() / l).string());
        while (dirs.size() < min) dirs.push_back(empty_dir().string());
        std::string out;
        for (const auto& d : dirs) {
            check_overlay_path(d);
            out += (out.empty() ? "" : ":") + d;
        }
        return out;
    }

    runtime::MountStep overlay_step(const std::string& lower, bool readonly, const std::string& target) {
        std::string data = "lowerdir=" + lower;
        if (!readonly) {
            fs::path upper = fresh("upper"), wk = fresh("work");
            make_dirs(upper, 0755);
            make_dirs(wk, 0700);
            check_overlay_path(upper.string());
            check_overlay_path(wk.string());
            data += ",upperdir=" + upper.string() + ",workdir=" + wk.string();
        }
        data += ",userxattr";
        return runtime::make_fs_step("overlay", target, readonly ? MS_RDONLY : 0, data);
    }

    // ---- bind ----
    runtime::MountStep bind_context(const BuildMount& m) {
        UniqueFd ctx(::open(in.context.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!ctx) throw_errno("open build context", in.context.string());
        // The context BuildKit sees leaves .dockerignore'd files out: an excluded source, or a
        // symlink to one, is not there (resolve_source).
        auto rel = resolve_source(ctx.get(), m.source, in.matcher);
        if (!rel)
            throw Error("RUN --mount=type=bind: source " + m.source +
                        " is not in the build context (or is excluded by .dockerignore)");
        UniqueFd src = open_in_root(ctx.get(), *rel, O_PATH);
        if (!src) throw Error("RUN --mount=type=bind: source " + m.source + " is not in the build context: " +
                              std::strerror(errno));
        struct stat st {};
        if (::fstat(src.get(), &st) != 0) throw_errno("stat", m.source);
        std::string host = fd_real_path(src.get());
        bool dir = S_ISDIR(st.st_mode);
        if (dir && in.matcher && has_excluded(host, *rel == "." ? "" : *rel)) {
            // ... and what is beneath a directory: bind a filtered copy.
            fs::path copy = fresh("ctx");
            make_dirs(copy, 0755);
            CopyRequest req;
            req.sources = {*rel};
            req.dest = "/";
            req.chown = CopyOwner{::getuid(), ::getgid()};
            req.instruction = "RUN --mount";
            copy_files(ctx.get(), copy.string(), req, in.matcher);
            return runtime::make_bind_step(copy, m.target, true, m.readonly);
        }
        if (m.readonly) return runtime::make_bind_step(host, m.target, dir, true);
        if (dir) {
            check_overlay_path(host);
            return overlay_step(host, false, m.target);
        }
        // A writable file: a private copy whose writes are discarded with it.
        fs::path copy = fresh("file");
        fs::copy_file(host, copy);
        ::chmod(copy.c_str(), st.st_mode & 07777);
        return runtime::make_bind_step(copy, m.target, false, false);
    }

    // True when a .dockerignore pattern leaves out something beneath rel (context-relative).
    bool has_excluded(const fs::path& host, const std::string& rel) {
        std::error_code ec;
        for (fs::recursive_directory_iterator it(host, fs::directory_options::none, ec), end; !ec && it != end;
             it.increment(ec)) {
            std::string p = (rel.empty() ? "" : rel + "/") + it->path().lexically_relative(host).generic_string();
            if (in.matcher->excluded(p)) return true;
        }
        return false;
    }

    // The whole stage: an overlay of its layers (read-only, or with a discarded upper).
    runtime::MountStep bind_from_root(const BuildMount& m) {
        auto layers = in.from_layers(m.from);
        return overlay_step(lowerdirs(layers, m.readonly ? 2 : 1), m.readonly, m.target);
    }

    // A subtree of a stage: copied inside the namespace (owners kept), bound once it exists.
    fs::path bind_from_copy(const BuildMount& m) {
        fs::path copy = fresh("from");
        ops.push_back({{"op", "extract"}, {"layers", in.from_layers(m.from)}, {"source", m.source}, {"dest", copy.string()}});
        return copy;
    }

    struct PendingBind {
        std::size_t index;
        fs::path host;
        BuildMount mount;
    };
    std::vector<PendingBind> pending_binds;

    // Runs the preparation ops in the user namespace, then fills in the steps of the binds
    // that waited for their copies.
    void prepare(std::vector<runtime::MountStep>& steps) {
        run_ops_in_userns(*in.store, in.mapping, ops, work);
        for (auto& f : after_ops) f();
        init_locks.clear();
        for (const auto& p : pending_binds) {
            struct stat st {};
            if (::lstat(p.host.c_str(), &st) != 0) throw_errno("stat", p.host.string());
            steps[p.index] = runtime::make_bind_step(p.host, p.mount.target, S_ISDIR(st.st_mode), p.mount.readonly);
        }
    }

    // ---- cache ----
    runtime::MountStep cache(const BuildMount& m) {
        std::string from_key = m.from.empty() ? "" : in.from_key(m.from).str();
        std::string name = cache_mount_dir_name(m, from_key);
        fs::path data;
        if (auto it = caches.find(name); it != caches.end()) {
            data = it->second;
        } else {
            fs::path inst = acquire_instance(name, m.sharing);
            data = inst / "data";
            caches[name] = data;
            if (!fs::exists(data) && init_cache(inst, m)) new_caches.insert(data);
        }
        fs::path host = data;
        // Without from, source names a subdir of the cache, made when missing; with from, the
        // cache was seeded with from's source subtree and is mounted whole. The ops run before
        // a new cache's data.tmp is renamed to data, so its subdir is made in data.tmp.
        if (m.source != "/" && m.from.empty()) {
            host = data / m.source.substr(1);
            fs::path root = new_caches.count(data) ? data.parent_path() / "data.tmp" : data;
            ops.push_back({{"op", "mkdirs"}, {"root", root.string()}, {"path", m.source}});
        }
        return runtime::make_bind_step(host, m.target, true, m.readonly);
    }

    UniqueFd lock_file(const fs::path& p) {
        UniqueFd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        if (!fd) throw_errno("open", p.string());
        return fd;
    }

    // shared: a shared lock on instance 0; locked: an exclusive one (waits); private: the first
    // instance nobody holds, a new one when all are in use (BuildKit's CacheSharingOpt).
    fs::path acquire_instance(const std::string& name, const std::string& sharing) {
        fs::path base = in.store->cache_dir() / "mounts";
        make_dirs(base, 0700);
        for (int n = 0;; ++n) {
            fs::path inst = base / (n == 0 ? name : name + "." + std::to_string(n));
            if (::mkdir(inst.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir", inst.string());
            UniqueFd fd = lock_file(inst / "lock");
            if (sharing == "private") {
                if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
                    if (errno == EWOULDBLOCK) continue;
                    throw_errno("flock", (inst / "lock").string());
                }
            } else {
                int op = sharing == "locked" ? LOCK_EX : LOCK_SH;
                if (::flock(fd.get(), op | LOCK_NB) != 0) {
                    if (errno != EWOULDBLOCK) throw_errno("flock", (inst / "lock").string());
                    std::cerr << "waiting for the cache mount " << name.substr(0, 12) << " (in use by another build)"
                              << std::endl;
                    while (::flock(fd.get(), op) != 0)
                        if (errno != EINTR) throw_errno("flock", (inst / "lock").string());
                }
            }
            locks.push_back(std::move(fd));
            return inst;
        }
    }

    // A new cache dir: data.tmp made (mode, owner or a copy of from's subtree) and renamed to
    // data once the ops ran, under init.lock so two builds do not both make it.
    // False when another build made it meanwhile.
    bool init_cache(const fs::path& inst, const BuildMount& m) {
        UniqueFd init = lock_file(inst / "init.lock");
        while (::flock(init.get(), LOCK_EX) != 0)
            if (errno != EINTR) throw_errno("flock", (inst / "init.lock").string());
        fs::path data = inst / "data", tmp = inst / "data.tmp";
        if (fs::exists(data)) return false;
        if (fs::exists(tmp)) runtime::remove_tree(in.mapping, tmp.string());
        if (!m.from.empty()) {
            ops.push_back({{"op", "extract"}, {"layers", in.from_layers(m.from)}, {"source", m.source}, {"dest", tmp.string()}});
        } else {
            if (::mkdir(tmp.c_str(), 0755) != 0) throw_errno("mkdir", tmp.string());
            mode_t mode = m.source == "/" ? m.mode.value_or(0755) : 0755;
            if (::chmod(tmp.c_str(), mode) != 0) throw_errno("chmod", tmp.string());
            std::uint32_t uid = m.source == "/" ? m.uid.value_or(0) : 0, gid = m.source == "/" ? m.gid.value_or(0) : 0;
            if (uid != 0 || gid != 0)
                ops.push_back({{"op", "chown"}, {"path", tmp.string()}, {"uid", uid}, {"gid", gid}, {"mode", mode}});
        }
        after_ops.push_back([tmp, data] {
            if (::rename(tmp.c_str(), data.c_str()) != 0) throw_errno("rename", data.string());
        });
        init_locks.push_back(std::move(init));
        return true;
    }

    // ---- secret and ssh ----
    fs::path secret_file(const std::string& content, const BuildMount& m) {
        if (secret_dir.empty()) {
            // /dev/shm is a tmpfs: the secret never reaches a disk. The store's tmp/ otherwise.
            std::string tmpl = "/dev/shm/aishell-secrets-XXXXXX";
            if (::mkdtemp(tmpl.data())) {
                secret_dir = tmpl;
            } else {
                secret_dir = work / "secrets";
                make_dirs(secret_dir, 0700);
            }
        }
        fs::path p = secret_dir / ("s" + std::to_string(counter++));
        UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd) throw_errno("create secret file", p.string());
        write_all(fd.get(), content, "secret " + m.id);
        mode_t mode = m.mode.value_or(0400);
        if (::fchmod(fd.get(), mode) != 0) throw_errno("chmod", p.string());
        if (m.uid.value_or(0) != 0 || m.gid.value_or(0) != 0)
            ops.push_back({{"op", "chown"}, {"path", p.string()}, {"uid", m.uid.value_or(0)}, {"gid", m.gid.value_or(0)},
                           {"mode", mode}});
        return p;
    }
};

MountSession::MountSession(const std::vector<BuildMount>& mounts, const MountInputs& in,
                           const std::vector<std::string>& env)
    : impl_(std::make_unique<Impl>(in)) {
    Impl& I = *impl_;
    bool env_has_auth_sock = std::any_of(env.begin(), env.end(), [](const std::string& e) { return e.rfind("SSH_AUTH_SOCK=", 0) == 0; });
    std::string first_ssh_target;
    for (const auto& m : mounts) {
        try {
            if (m.type == "bind" && m.from.empty()) {
                steps_.push_back(I.bind_context(m));
            } else if (m.type == "bind" && m.source == "/") {
                steps_.push_back(I.bind_from_root(m));
            } else if (m.type == "bind") {
                I.pending_binds.push_back({steps_.size(), I.bind_from_copy(m), m});
                steps_.emplace_back();  // filled in once the copy exists
            } else if (m.type == "cache") {
                steps_.push_back(I.cache(m));
            } else if (m.type == "tmpfs") {
                std::string data = m.size ? "size=" + std::to_string(*m.size) : "";
                steps_.push_back(runtime::make_fs_step("tmpfs", m.target, MS_NOSUID | (m.readonly ? MS_RDONLY : 0), data));
            } else if (m.type == "secret") {
                const SecretSource* src = source_by_id(in.secrets, m.id);
                std::optional<std::string> content = src ? read_secret(*src) : std::nullopt;
                if (!content) {
                    if (m.required)
                        throw Error("secret " + m.id + ": not found", "pass it with --secret id=" + m.id + ",src=FILE");
                    continue;  // optional and absent: no file, no variable (BuildKit)
                }
                if (m.env) env_.push_back(*m.env + "=" + *content);
                if (!m.target.empty()) steps_.push_back(runtime::make_bind_step(I.secret_file(*content, m), m.target, false, m.readonly));
            } else if (m.type == "ssh") {
                if (first_ssh_target.empty()) first_ssh_target = m.target;
                const SshSource* src = source_by_id(in.ssh, m.id);
                if (!src) {
                    if (m.required)
                        throw Error("no SSH agent \"" + m.id + "\" forwarded for RUN --mount=type=ssh",
                                    "pass --ssh " + m.id + (m.id == "default" ? "" : "=SOCKET") + " to aishell build");
                    continue;
                }
                if ((m.mode && *m.mode != 0600) || m.uid.value_or(0) != 0 || m.gid.value_or(0) != 0)
                    throw Error("RUN --mount=type=ssh: mode, uid and gid other than 0600, 0 and 0 are not supported",
                                "the agent socket is forwarded as it is (owned by container root)");
                steps_.push_back(runtime::make_bind_step(src->socket, m.target, false, m.readonly));
            }
            if (!m.target.empty()) stubs_.push_back(m.target);
        } catch (Error& e) {
            e.add_context("RUN --mount=type=" + m.type + (m.target.empty() ? "" : ",target=" + m.target));
            throw;
        }
    }
    // BuildKit's ExecOp: SSH_AUTH_SOCK names the first ssh mount unless the env sets it.
    if (!first_ssh_target.empty() && !env_has_auth_sock) env_.push_back("SSH_AUTH_SOCK=" + first_ssh_target);

    I.prepare(steps_);
    // Parents before children (BuildKit sorts an exec's mounts by target).
    std::stable_sort(steps_.begin(), steps_.end(),
                     [](const runtime::MountStep& a, const runtime::MountStep& b) { return a.target < b.target; });
}

MountSession::~MountSession() = default;

// ---- inside the user namespace ---------------------------------------------------------------

namespace {

void enter_private_mount_ns() {
    if (::unshare(CLONE_NEWNS) != 0) throw_errno("unshare", "mount namespace");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) throw_errno("make mounts private");
}

// A read-only overlay of lowers (top first) at target; empties fill up to two lowerdirs.
void mount_lower_view(const oci::Store& store, std::vector<std::string> lowers, const fs::path& target,
                      const fs::path& scratch) {
    const fs::path layers = store.layers_dir();
    for (int i = 0; lowers.size() < 2; ++i) {
        fs::path e = scratch / ("empty-view" + std::to_string(i));
        make_dirs(e, 0755);
        lowers.push_back(e.lexically_relative(layers).string());
    }
    make_dirs(target, 0755);
    mount_layers_overlay(layers, lowers, target, std::nullopt);
}

void copy_file_keep(int src, const fs::path& dst, const struct stat& st) {
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out) throw_errno("create", dst.string());
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(src, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read", dst.string());
        if (n == 0) break;
        write_all(out.get(), std::string_view(buf, static_cast<std::size_t>(n)), dst.string());
    }
    if (::fchown(out.get(), st.st_uid, st.st_gid) != 0) throw_errno("chown", dst.string());
    if (::fchmod(out.get(), st.st_mode & 07777) != 0) throw_errno("chmod", dst.string());
}

void extract_op(const oci::Store& store, const json& op, const fs::path& work, int n) {
    fs::path view = work / ("view" + std::to_string(n));
    mount_lower_view(store, op.at("layers").get<std::vector<std::string>>(), view, work);
    UniqueFd root(::open(view.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("open", view.string());
    std::string source = op.at("source").get<std::string>();
    fs::path dest = op.at("dest").get<std::string>();
    UniqueFd src = open_in_root(root.get(), source, O_PATH);
    if (!src) throw Error("source " + source + " not found in the mounted stage: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(src.get(), &st) != 0) throw_errno("stat", source);
    if (S_ISDIR(st.st_mode)) {
        runtime::OwnerShift same{[](std::uint32_t u) { return std::optional<std::uint32_t>(u); },
                                 [](std::uint32_t g) { return std::optional<std::uint32_t>(g); }};
        runtime::copy_tree_reowned(fd_real_path(src.get()), dest, same);
    } else if (S_ISREG(st.st_mode)) {
        UniqueFd f = open_in_root(root.get(), source, O_RDONLY);
        if (!f) throw_errno("open", source);
        copy_file_keep(f.get(), dest, st);
    } else {
        throw Error("source " + source + " is neither a file nor a directory");
    }
    ::umount2(view.c_str(), MNT_DETACH);
}

// mkdir -p of path beneath root without following symlinks (a cache's content is the
// container's: a symlink there must not send the bind elsewhere on the host).
void mkdirs_op(const fs::path& root, const std::string& path) {
    UniqueFd cur(::open(root.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!cur) throw_errno("open", root.string());
    for (const auto& c : components(path)) {
        if (::mkdirat(cur.get(), c.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", c);
        UniqueFd next(::openat(cur.get(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next) throw Error("cache mount source " + path + ": " + c + " is a symlink or not a directory");
        cur = std::move(next);
    }
}

bool is_empty_dir(const fs::path& p) {
    std::error_code ec;
    return fs::is_empty(p, ec) && !ec;
}

bool opaque(const fs::path& p) {
    char v[4];
    ssize_t n = ::lgetxattr(p.c_str(), "user.overlay.opaque", v, sizeof v);
    return n == 1 && v[0] == 'y';
}

}  // namespace

void run_prepare_ops(const oci::Store& store, const json& ops, const fs::path& work) {
    bool ns = false;
    int n = 0;
    for (const auto& op : ops) {
        std::string kind = op.at("op").get<std::string>();
        if (kind == "chown") {
            std::string p = op.at("path").get<std::string>();
            auto uid = op.at("uid").get<std::uint32_t>(), gid = op.at("gid").get<std::uint32_t>();
            if (::lchown(p.c_str(), uid, gid) != 0) {
                if (errno != EINVAL) throw_errno("chown", p);
                throw Error("uid " + std::to_string(uid) + " or gid " + std::to_string(gid) +
                                " is not mapped in the build's user namespace",
                            "single mode maps only root; give the user a range in /etc/subuid and /etc/subgid");
            }
            if (op.contains("mode") && ::chmod(p.c_str(), op["mode"].get<mode_t>()) != 0) throw_errno("chmod", p);
        } else if (kind == "mkdirs") {
            mkdirs_op(op.at("root").get<std::string>(), op.at("path").get<std::string>());
        } else if (kind == "extract") {
            if (!ns) enter_private_mount_ns();
            ns = true;
            extract_op(store, op, work, n++);
        } else {
            throw Error("unknown prepare op " + kind);
        }
    }
}

void remove_mount_stubs(const oci::Store& store, const std::vector<std::string>& lowers,
                        const std::vector<std::string>& stubs, const fs::path& run_dir) {
    const fs::path upper = run_dir / "upper";
    // Cheap test first: nothing to do unless the upper holds a stub's first component.
    bool any = false;
    for (const auto& s : stubs) {
        auto c = components(s);
        struct stat st {};
        if (!c.empty() && ::lstat((upper / c[0]).c_str(), &st) == 0) any = true;
    }
    if (!any) return;
    enter_private_mount_ns();
    const fs::path view = run_dir / "lowerview";
    mount_lower_view(store, lowers, view, run_dir);
    UniqueFd root(::open(view.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("open", view.string());
    const std::string view_prefix = fd_real_path(root.get());

    for (const auto& stub : stubs) {
        auto comps = components(stub);
        // The longest prefix that exists below (the runtime created the rest, in its resolved dir).
        std::size_t k = 0;
        int missing = 0;
        UniqueFd parent = open_in_root(root.get(), "/", O_PATH);
        for (std::string prefix; k < comps.size(); ++k) {
            prefix += "/" + comps[k];
            UniqueFd fd = open_in_root(root.get(), prefix, O_PATH);
            if (!fd) {
                missing = errno;
                break;
            }
            parent = std::move(fd);
        }
        if (k == comps.size() || missing != ENOENT || !parent) continue;  // existed (or unresolvable)
        std::string base = fd_real_path(parent.get()).substr(view_prefix.size());  // "" for the root
        std::vector<std::string> created;
        std::string p = base;
        for (std::size_t i = k; i < comps.size(); ++i) created.push_back(p += "/" + comps[i]);
        bool all = true;
        for (auto it = created.rbegin(); it != created.rend() && all; ++it) {
            fs::path u = upper / it->substr(1);
            struct stat st {};
            if (::lstat(u.c_str(), &st) != 0) continue;
            if (S_ISDIR(st.st_mode) && is_empty_dir(u) && !opaque(u)) all = ::rmdir(u.c_str()) == 0;
            else if (S_ISREG(st.st_mode) && st.st_size == 0) all = ::unlink(u.c_str()) == 0;
            else all = false;
        }
        // Parents copied up only because a mountpoint was made in them.
        for (std::string d = base; all && d.size() > 1; d = fs::path(d).parent_path().string()) {
            fs::path u = upper / d.substr(1), l = view / d.substr(1);
            struct stat su {}, sl {};
            if (::lstat(u.c_str(), &su) != 0) continue;
            if (!S_ISDIR(su.st_mode) || !is_empty_dir(u) || opaque(u) || ::lstat(l.c_str(), &sl) != 0) break;
            if (su.st_mode != sl.st_mode || su.st_uid != sl.st_uid || su.st_gid != sl.st_gid) break;
            if (::rmdir(u.c_str()) != 0) break;
        }
    }
    ::umount2(view.c_str(), MNT_DETACH);
}

}  // namespace aishell::composer
