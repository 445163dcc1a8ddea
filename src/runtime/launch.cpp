// exec_image and its steps (see launch.hpp).
#include "runtime/launch.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iostream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/parse_number.hpp"
#include "common/unique_fd.hpp"
#include "oci/layer_unpack.hpp"
#include "oci/lease.hpp"
#include "runtime/capabilities.hpp"
#include "runtime/helpers.hpp"
#include "runtime/image_fs.hpp"
#include "runtime/mounts.hpp"
#include "runtime/reown.hpp"
#include "runtime/seccomp.hpp"
#include "runtime/userns_exec.hpp"
#include "runtime/userns_holder.hpp"

namespace aishell::runtime {

namespace {

struct SecurityOptions {
    bool seccomp = true;
    std::optional<std::string> seccomp_profile_path;
    bool no_new_privileges = false;
};

// Docker accepts both "key=value" and the older "key:value".
SecurityOptions parse_security_opts(const std::vector<std::string>& opts) {
    SecurityOptions s;
    for (const auto& o : opts) {
        auto sep = o.find_first_of("=:");
        std::string key = o.substr(0, sep), value = sep == std::string::npos ? "" : o.substr(sep + 1);
        if (key == "seccomp" && value == "unconfined") s.seccomp = false;
        else if (key == "seccomp" && !value.empty()) s.seccomp_profile_path = value;
        else if (key == "no-new-privileges" && (value.empty() || value == "true")) s.no_new_privileges = true;
        else if (key == "no-new-privileges" && value == "false") s.no_new_privileges = false;
        else throw Error("unknown --security-opt '" + o + "'", "seccomp=unconfined, seccomp=PROFILE.json or no-new-privileges");
    }
    return s;
}

// Compiled once per profile text, caps, kernel and libseccomp, then loaded from the store's
// cache/seccomp/ (see compile_seccomp_cached).
std::vector<sock_filter> seccomp_program(const oci::Store& store, const SecurityOptions& sec, std::uint64_t caps) {
    if (!sec.seccomp) return {};
    auto ctx = host_seccomp_context(caps);
    const fs::path cache = store.cache_dir() / "seccomp";
    if (sec.seccomp_profile_path)
        return with_context("seccomp profile " + *sec.seccomp_profile_path, [&] {
            return compile_seccomp_cached(cache, read_file(*sec.seccomp_profile_path, 1 << 20), ctx);
        });
    return compile_seccomp_cached(cache, default_seccomp_profile_text(), ctx);
}

// tmp/run-<id>: upper/ and work/ (the container's rootfs is mounted over the dir itself);
// removed on destruction unless kept or handed to the reaper.
//
// The reaper removes the run dir once PID 1 (pid_fd) is gone, after aishell has returned the
// command's status: aishell does not wait for the container's namespaces to be torn down nor for
// its upper dir to be deleted (together tens of milliseconds on a busy disk). It is forked early
// (start_reaper, while the child sets the container up) and acts only on remove_when_gone's
// word: if aishell fails or dies first, the pipe closes unsaid and the reaper leaves the dir to
// the destructor (or, after a kill, to garbage collection's stale tmp/ sweep). Forking is safe:
// the caller is single-threaded here (no pull is running).
class RunDir {
public:
    RunDir(const oci::Store& store, const IdMapping& mapping, bool keep)
        : path_(store.tmp_dir() / ("run-" + random_hex(16))), mapping_(mapping), keep_(keep) {
        make_dirs(path_, 0700);
        // A shared flock on the dir marks it in use for garbage collection's tmp/ sweep (which
        // takes what is old and unlocked) for as long as the container lives: its PID 1
        // inherits this fd, as it inherits the lease's.
        in_use_.reset(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (in_use_) ::flock(in_use_.get(), LOCK_SH);
    }
    RunDir(const RunDir&) = delete;
    RunDir& operator=(const RunDir&) = delete;
    ~RunDir() {
        word_.reset();  // an unsaid word: the reaper exits and leaves the dir alone
        if (keep_) return;
        try {
            remove_tree(mapping_, path_.string());
        } catch (const Error& e) {
            std::cerr << "aishell: warning: " << e.message() << "\n";
        }
    }
    const fs::path& path() const { return path_; }

    void start_reaper(int pid_fd) {
        if (keep_ || pid_fd < 0 || word_) return;
        // A socket pair, not a pipe: the word is sent with MSG_NOSIGNAL, so a reaper that is
        // already gone costs no SIGPIPE (aishell would die of it with the command's status lost).
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;  // no reaper: the destructor removes it
        UniqueFd word_read(fds[0]), word_write(fds[1]);
        pid_t reaper = ::fork();
        if (reaper < 0) return;
        if (reaper == 0) reap(pid_fd, word_read.get(), word_write.get());
        word_ = std::move(word_write);
    }

    void remove_when_gone() {
        if (keep_ || !word_) return;
        if (::send(word_.get(), "r", 1, MSG_NOSIGNAL) != 1) return;  // the destructor removes it
        word_.reset();
        keep_ = true;  // the reaper owns it now
    }

private:
    // The reaper: detached, nothing of aishell's open but its pidfd and the word pipe.
    [[noreturn]] void reap(int pid_fd, int word_fd, int aishells_end) noexcept {
        // aishell's end first: with a copy of it open here, aishell going away unsaid would
        // never be seen (no EOF) and this process would wait forever.
        ::close(aishells_end);
        ::setsid();
        int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || ::dup2(null, STDIN_FILENO) < 0 || ::dup2(null, STDOUT_FILENO) < 0 || ::dup2(null, STDERR_FILENO) < 0)
            ::_exit(1);
        if (::dup2(pid_fd, 3) < 0 || ::dup2(word_fd, 4) < 0) ::_exit(1);
        // Nothing else of aishell's (the pty master, the container's pipes) stays open here.
        if (::syscall(SYS_close_range, 5u, ~0u, 0u) != 0)
            for (int fd = 5; fd < 4096; ++fd) ::close(fd);
        char word = 0;
        ssize_t n;
        do n = ::read(4, &word, 1); while (n < 0 && errno == EINTR);
        if (n != 1 || word != 'r') ::_exit(0);
        pollfd p{3, POLLIN, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {}
        try {
            remove_tree(mapping_, path_.string());
        } catch (...) {
        }
        ::_exit(0);
    }

    fs::path path_;
    IdMapping mapping_;
    bool keep_;
    UniqueFd in_use_;  // the dir, flocked shared
    UniqueFd word_;    // write end of the reaper's word pipe
};

// -v SOURCE:CONTAINER: a path, or a named volume of the store, made on first use and leased
// before it is looked for (lease.hpp), so that no prune removes it while the run uses it.
BindSpec volume_bind(const oci::Store& store, const std::string& text) {
    auto arg = split_volume_arg(text);
    if (!is_volume_source(arg.source)) return bind_for(arg.source, arg);
    if (!oci::is_volume_name(arg.source))
        throw Error("bad volume name '" + arg.source + "' in '" + text + "'",
                    "a volume name is letters, digits, '_', '.' and '-' (a path starts with / or ./)");
    if (store.lease()) store.lease()->add({oci::LeaseEntry::volume(arg.source)});
    return bind_for(store.ensure_volume(arg.source), arg);
}

}  // namespace

IdMapping store_mapping(oci::Store& store) { return store_mapping(store, probe_host()); }

IdMapping store_mapping(oci::Store& store, const HostIds& host) {
    IdMapping wanted = choose_mapping(host, false);
    auto recorded = store.get_meta("idmap");
    if (!recorded) {
        auto lock = store.lock_exclusive();
        recorded = store.get_meta("idmap");
        if (!recorded) {
            store.set_meta("idmap", wanted.to_string());
            return wanted;
        }
    }
    check_store_mapping(recorded, wanted);
    return wanted;
}

std::vector<std::string> ensure_image_layers(oci::Store& store, const oci::Image& image, const IdMapping& mapping) {
    auto diff_ids = image.config.diff_ids();
    const auto& layers = image.manifest.layers;
    if (diff_ids.size() != layers.size())
        throw Error("image " + image.name + ": " + std::to_string(layers.size()) + " layers but " +
                    std::to_string(diff_ids.size()) + " diff_ids");
    // Lease, then look (oci/lease.hpp): a tree found here stays until the lease ends.
    if (store.lease()) store.lease()->add(oci::image_lease_entries(image));
    // The helper reports a failure in this file (message, then hint), so that the user sees
    // one error line, the helper's, and not a second one from here. It records the trees it
    // installs in the store's lease.
    const fs::path error_file = store.tmp_dir() / ("unpack-" + random_hex(8) + ".error");
    std::vector<std::string> names, args{store.root().string(), error_file.string(),
                                         store.lease() ? store.lease()->path().string() : "-"};
    const std::size_t fixed_args = args.size();
    for (std::size_t i = 0; i < layers.size(); ++i) {
        std::string hex(diff_ids[i].encoded());
        names.push_back(hex);
        if (fs::exists(store.layers_dir() / hex)) continue;
        args.insert(args.end(), {layers[i].media_type, layers[i].digest.str(), std::to_string(layers[i].size), diff_ids[i].str()});
    }
    if (args.size() > fixed_args) {
        int status = run_in_userns(mapping, kUnpackLayers, args);
        if (status != 0) {
            std::optional<std::string> report;
            try {
                report = read_file_if_exists(error_file, 1 << 16);
            } catch (const Error&) {
            }
            std::error_code ec;
            fs::remove(error_file, ec);
            if (!report || report->empty())
                throw Error("unpack layers of " + image.name + " failed (status " + std::to_string(status) + ")");
            auto nl = report->find('\n');
            throw Error(report->substr(0, nl), nl == std::string::npos ? "" : report->substr(nl + 1));
        }
    }
    std::reverse(names.begin(), names.end());  // overlay wants the top layer first
    return names;
}

int unpack_layers_here(const std::vector<std::string>& args) {
    if (args.size() < 3 || (args.size() - 3) % 4 != 0)
        throw Error(std::string(kUnpackLayers.name) + ": bad arguments", kHelperHint);
    try {
        auto store = oci::Store::open(args[0]);
        if (args[2] != "-") store = store.with_lease(oci::Lease::join(args[2]));
        for (std::size_t i = 3; i < args.size(); i += 4) {
            oci::Descriptor d;
            d.media_type = args[i];
            d.digest = oci::Digest::parse(args[i + 1]);
            d.size = parse_number<std::int64_t>(args[i + 2], {.what = "layer size", .where = kUnpackLayers.name});
            auto diff_id = oci::Digest::parse(args[i + 3]);
            oci::ensure_layer_unpacked(store, d, diff_id, {});
        }
        return 0;
    } catch (const Error& e) {
        // For the parent, which turns it into the one error line (see ensure_image_layers);
        // when that cannot be written, cli prints it here.
        write_file_atomic(args[1], e.message() + "\n" + e.hint(), 0600);
        return 1;
    }
}

namespace {

// The command and who runs it: the process from the image's config and the options, the id
// mapping it runs under, and layer trees owned for that mapping.
void set_process(ContainerSpec& spec, oci::Store& store, const oci::Image& image, const ProcessOptions& options,
                 const HostIds& host, const IdMapping& layers_mapping) {
    ProcessOptions popts = options;
    popts.hostname = spec.hostname;
    // The image as its trees show it (owners aside, a re-owned copy reads the same).
    UserDb db{read_layered_file(spec.layers_dir, spec.layers, "/etc/passwd"),
              read_layered_file(spec.layers_dir, spec.layers, "/etc/group")};
    std::optional<HostUser> keep_user;
    if (options.keep_id) keep_user = current_host_user();
    spec.process = build_process(image.config, popts, db, keep_user,
                                 [&spec](const std::string& name, const std::vector<std::string>& path_dirs) {
                                     return image_has_executable(spec.layers_dir, spec.layers, path_dirs, name);
                                 });
    // The caller is whoever the command runs as: container root by default (the store's own
    // mapping), its own ids with keep-id, the image's (or --user's) user otherwise, as podman's
    // --userns=keep-id:uid=N,gid=N. So what the command makes in a bound project is the caller's.
    spec.mapping = choose_mapping_as(host, spec.process.uid, spec.process.gid);
    // A mapping other than the store's (keep-id, a non-root user in subuid mode) uses copies
    // of the trees re-owned for it (made once, kept beside layers/).
    if (spec.mapping.mode == UsernsMode::Subuid && spec.mapping != layers_mapping)
        spec.layers_dir = ensure_reowned_layers(store.root(), layers_mapping, spec.mapping, spec.layers);
    if (!spec.mapping.uid_mapped_inside(spec.process.uid) || !spec.mapping.gid_mapped_inside(spec.process.gid))
        throw Error("user " + std::to_string(spec.process.uid) + ":" + std::to_string(spec.process.gid) +
                        " is not mapped in " + std::string(mode_name(spec.mapping.mode)) + " mode",
                    "single mode maps only root; add a /etc/subuid range for subuid mode");
    if (spec.mapping.mode == UsernsMode::Single) spec.process.groups.clear();  // setgroups is denied
}

// Capabilities, no_new_privs and the seccomp program, from --cap-add/--cap-drop/--security-opt.
void set_security(ContainerSpec& spec, oci::Store& store, const RunOptions& options) {
    spec.capabilities = compute_capabilities(options.cap_add, options.cap_drop);
    auto sec = parse_security_opts(options.security_opts);
    spec.no_new_privileges = sec.no_new_privileges;
    spec.seccomp = seccomp_program(store, sec, spec.capabilities);
}

// What the child mounts: /dev, /proc, /sys and the masks (mounts.hpp), the binds and volumes.
std::vector<MountStep> container_mounts(oci::Store& store, const IdMapping& mapping, const RunOptions& options) {
    MountPlanInput mi;
    mi.host_network = options.network == Network::Host;
    mi.gid5_mapped = mapping.gid_mapped_inside(5);
    mi.binds = options.binds;
    for (const auto& v : options.volumes) mi.binds.push_back(volume_bind(store, v));
    mi.extra = masks_under_binds(fs::weakly_canonical(store.root()), mi.binds);
    return plan_mounts(mi);
}

}  // namespace

RunResult exec_image(oci::Store& unleased, const oci::Image& image, const RunOptions& options) {
    // Held for the container's life (PID 1 inherits the fd): no rollback or GC removes the
    // image's blobs or trees meanwhile. Taken before the trees are looked for (lease.hpp).
    oci::Store store = unleased.with_lease(oci::Lease::create(unleased, "exec", oci::image_lease_entries(image)));
    const HostIds host = probe_host();
    const IdMapping layers_mapping = store_mapping(store, host);

    ContainerSpec spec;
    spec.layers_dir = store.layers_dir();
    spec.layers = ensure_image_layers(store, image, layers_mapping);
    spec.network = options.network;
    spec.hostname = options.process.hostname.empty() ? random_hex(12) : options.process.hostname;
    set_process(spec, store, image, options.process, host, layers_mapping);
    set_security(spec, store, options);
    spec.mounts = container_mounts(store, spec.mapping, options);
    spec.tty = options.process.tty;
    spec.interactive = options.interactive;
    spec.early_status = true;

    RunDir run(store, layers_mapping, options.keep_run_dir);
    spec.run_dir = run.path();
    // Last, with every host fact gathered: from here on this process is root of the holder's
    // namespace (and so is the run dir's reaper, which then needs no helper of its own).
    spec.in_joined_userns = join_userns_holder(store.tmp_dir(), spec.mapping);
    spec.on_started = [&run](int pid_fd) { run.start_reaper(pid_fd); };
    RunResult result = run_container(spec);
    if (result.lingering) run.remove_when_gone();
    return result;
}

}  // namespace aishell::runtime
