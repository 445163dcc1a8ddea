// The in-namespace half of a build step (see build_step.hpp).
#include "composer/build_step.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_copy.hpp"
#include "composer/build_mounts.hpp"
#include "composer/build_step_spec.hpp"
#include "composer/helpers.hpp"
#include "oci/archive_api.hpp"
#include "oci/json_text.hpp"
#include "oci/layer_write.hpp"
#include "oci/lease.hpp"
#include "oci/store.hpp"
#include "runtime/container.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string relative_to(const fs::path& p, const fs::path& base) { return p.lexically_relative(base).string(); }

}  // namespace

void mount_layers_overlay(const fs::path& layers_dir, const std::vector<std::string>& lowers, const fs::path& target,
                          const std::optional<std::pair<fs::path, fs::path>>& upper_work) {
    // Relative lowerdirs from inside layers/ keep the options under the page-size limit.
    if (::chdir(layers_dir.c_str()) != 0) throw_errno("chdir", layers_dir.string());
    std::string opts;
    unsigned long flags = 0;
    if (upper_work) {
        opts = runtime::overlay_options(lowers, relative_to(upper_work->first, layers_dir),
                                        relative_to(upper_work->second, layers_dir),
                                        static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
    } else {
        opts = "lowerdir=";
        for (std::size_t i = 0; i < lowers.size(); ++i) opts += (i ? ":" : "") + lowers[i];
        opts += ",userxattr";
        flags = MS_RDONLY;
    }
    if (::mount("overlay", target.c_str(), "overlay", flags, opts.c_str()) != 0)
        throw_errno("mount overlay", target.string());
}

namespace {

void make_dir_path(const std::string& path, std::optional<CopyOwner> owner, OwnerRecorder& owners) {
    std::string cur;
    for (const auto& part : fs::path(path).relative_path()) {
        cur += "/" + part.string();
        struct stat st {};
        if (::stat(cur.c_str(), &st) == 0) {
            if (!S_ISDIR(st.st_mode)) throw Error("WORKDIR " + path + ": " + cur + " is not a directory");
            continue;
        }
        if (::mkdir(cur.c_str(), 0755) != 0) throw_errno("mkdir", cur);
        CopyOwner o = owner.value_or(CopyOwner{});
        if (::lchown(cur.c_str(), o.uid, o.gid) != 0 && errno != EINVAL) throw_errno("lchown", cur);
        owners.owner_attempted(cur, o);
    }
}

// The file operation, in a forked child chrooted into the step's rootfs.
void run_chrooted(const fs::path& rootfs, int src_fd, const StepSpec& spec, const oci::LayeredOwners* src_owners) {
    // The child reports its error through a file opened before chroot.
    UniqueFd err(::open(rootfs.parent_path().c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!err) throw_errno("open error file", rootfs.parent_path().string());
    // Owners the step cannot set on disk (single mode) go to a side table beside the upper dir,
    // never in it; commit_upper hands it to the layer writer (oci/owner_table.hpp). Identities
    // are read from the upper dir itself, opened before chroot as the table is.
    const fs::path upper_dir = rootfs.parent_path() / "upper", table_path = rootfs.parent_path() / "owners";
    UniqueFd upper(::open(upper_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!upper) throw_errno("open", upper_dir.string());
    UniqueFd table(::open(table_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!table) throw_errno("create owner table", table_path.string());
    // ADD extracts local archives with libarchive, which is dlopened on first use: load it
    // now, while the host's libraries are still visible (not after the chroot).
    if (spec.copy && spec.copy->request.extract_archives) oci::load_libarchive();
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) {
        int status = 0;
        try {
            if (::chroot(rootfs.c_str()) != 0) throw_errno("chroot", rootfs.string());
            if (::chdir("/") != 0) throw_errno("chdir", "/");
            OwnerRecorder owners("/", upper.get());
            if (spec.copy) {
                std::optional<IgnoreMatcher> matcher;
                if (spec.copy->ignore) matcher.emplace(*spec.copy->ignore);
                copy_files(src_fd, "/", spec.copy->request, matcher ? &*matcher : nullptr, &owners, src_owners);
            }
            if (spec.mkdir) make_dir_path(spec.mkdir->path, spec.mkdir->owner, owners);
            if (owners.size() > 0) oci::write_owner_table(table.get(), owners.finish(), table_path.string());
        } catch (const std::exception& e) {
            std::string msg = e.what();
            (void)!::write(err.get(), msg.data(), msg.size());
            status = 1;
        }
        ::_exit(status);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) throw_errno("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        std::string msg(4096, '\0');
        ssize_t n = ::pread(err.get(), msg.data(), msg.size(), 0);
        msg.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
        throw Error(msg.empty() ? "the file step failed" : msg);
    }
}

void apply_file_op(const oci::Store& store, const StepSpec& spec, const fs::path& run_dir) {
    for (auto d : {"upper", "work", "rootfs", "empty", "empty2", "src"}) make_dirs(run_dir / d, 0755);
    if (::unshare(CLONE_NEWNS) != 0) throw_errno("unshare", "mount namespace");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) throw_errno("make mounts private");
    const fs::path layers = store.layers_dir();
    std::string empty = relative_to(run_dir / "empty", layers);
    std::vector<std::string> lowers = spec.lower;
    lowers.push_back(empty);  // overlay wants a lowerdir; FROM scratch has none
    mount_layers_overlay(layers, lowers, run_dir / "rootfs", std::make_pair(run_dir / "upper", run_dir / "work"));

    UniqueFd src_fd;
    std::optional<oci::LayeredOwners> src_owners;  // what a --from source's layers recorded
    if (spec.copy && spec.copy->src_layers) {
        std::vector<std::string> src_layers = *spec.copy->src_layers;
        src_owners = oci::LayeredOwners::load(layers, src_layers);
        // A read-only overlay needs two lowerdirs, and the same dir twice is refused (ELOOP).
        src_layers.push_back(relative_to(run_dir / "empty2", layers));
        mount_layers_overlay(layers, src_layers, run_dir / "src", std::nullopt);
        src_fd = UniqueFd(::open((run_dir / "src").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    } else if (spec.copy) {
        const std::string& dir = spec.copy->src_dir;
        src_fd = UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!src_fd) throw_errno("open build context", dir);
    }
    run_chrooted(run_dir / "rootfs", src_fd.get(), spec, src_owners ? &*src_owners : nullptr);
    ::umount2((run_dir / "rootfs").c_str(), MNT_DETACH);
    ::umount2((run_dir / "src").c_str(), MNT_DETACH);
}

json commit_upper(oci::Store& store, const StepSpec& spec, const fs::path& run_dir) {
    const fs::path upper = run_dir / "upper";
    UniqueFd fd(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_errno("open", upper.string());
    oci::LayerWriteOptions options;
    options.compression = spec.compression == "zstd" ? oci::media_type::Compression::Zstd : oci::media_type::Compression::Gzip;
    if (spec.clamp) options.clamp_mtime = *spec.clamp;
    // Written by a file step when an owner could not be set on disk; outside the upper dir.
    std::optional<oci::OwnerTable> owners = oci::read_owner_table(run_dir / "owners");
    if (owners) options.owners = &*owners;
    // What the lower layers recorded, for the entries this step only copied up.
    auto lower_owners = oci::LayeredOwners::load(store.layers_dir(), spec.lower);
    options.lower_owners = &lower_owners;
    // A RUN under an emulated USER (single mode): what it made is USER's.
    options.new_entry_owner = spec.owner;
    auto layer = oci::write_layer(store, fd.get(), options);
    json result = {{"layer", nullptr}};
    if (!layer) return result;
    result["layer"] = oci::descriptor_to_json(layer->descriptor);
    result["diff_id"] = layer->diff_id.str();
    // The upper dir is already the layer in overlay format: it becomes layers/<hex> as is, with
    // the table of the owners its tar carries beside it (oci::install_layer_tree).
    // Lease, then look (oci/lease.hpp): a tree found here is not taken away by another build's
    // rollback; one installed here is recorded as this build's, for its own rollback.
    if (store.lease()) store.lease()->add({oci::LeaseEntry::layer(layer->diff_id)});
    const bool ours = oci::install_layer_tree(store.layers_dir(), std::string(layer->diff_id.encoded()), layer->owners,
                                              [&](const fs::path& target) {
                                                  ::syncfs(fd.get());
                                                  if (::rename(upper.c_str(), target.c_str()) == 0) return true;
                                                  if (errno != EEXIST && errno != ENOTEMPTY)
                                                      throw_errno("rename", target.string());
                                                  return false;
                                              });
    if (ours && store.lease()) store.lease()->add({oci::LeaseEntry::layer(layer->diff_id, true)});
    return result;
}

// One step, in the namespace: the file operation or the RUN's stub removal, then the commit.
json run_step(const StepSpec& spec) {
    auto store = oci::Store::open(spec.store);
    // The build's lease: the step's blob and tree are recorded there as they are written.
    if (!spec.lease.empty()) store = store.with_lease(oci::Lease::join(spec.lease));
    const fs::path run_dir = spec.run_dir;
    if (spec.copy || spec.mkdir) apply_file_op(store, spec, run_dir);
    else if (spec.stubs) remove_mount_stubs(store, spec.lower, *spec.stubs, run_dir);
    return commit_upper(store, spec, run_dir);
}

// ---- the channel: messages are an 8-byte length (host order: both ends are this binary) and
// that many bytes of MessagePack (oci::to_message: strings keep their bytes, a RUN command
// that is not UTF-8 too). A request {"op":"step","spec":{..}} (build_step_spec.hpp) gets {"result":{..}} or
// {"error":"..","hint":".."}; {"op":"rm","path":".."} gets no answer.
constexpr std::uint64_t kMaxMessage = 64u << 20;

bool send_message(int fd, const std::string& body) {
    std::uint64_t n = body.size();
    std::string frame(reinterpret_cast<const char*>(&n), sizeof n);
    frame += body;
    for (std::size_t off = 0; off < frame.size();) {
        // MSG_NOSIGNAL: a peer that is gone is an error here, not a SIGPIPE.
        ssize_t w = ::send(fd, frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        off += static_cast<std::size_t>(w);
    }
    return true;
}

// false at EOF (or any read error) before a whole message.
bool read_exact(int fd, char* buf, std::size_t size) {
    for (std::size_t got = 0; got < size;) {
        ssize_t n = ::read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        got += static_cast<std::size_t>(n);
    }
    return true;
}

std::optional<std::string> read_message(int fd) {
    std::uint64_t n = 0;
    if (!read_exact(fd, reinterpret_cast<char*>(&n), sizeof n) || n > kMaxMessage) return std::nullopt;
    std::string body(n, '\0');
    if (!read_exact(fd, body.data(), body.size())) return std::nullopt;
    return body;
}

json error_reply(const std::exception& e) {
    if (auto* err = dynamic_cast<const Error*>(&e)) return {{"error", err->message()}, {"hint", err->hint()}};
    return {{"error", e.what()}, {"hint", ""}};
}

// Runs one step in a forked child (its own mount namespace, cwd and heap: nothing of a step
// stays in the helper) and returns its reply. The helper is single-threaded, so the child may
// run ordinary code.
json run_step_in_child(const StepSpec& spec) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
    UniqueFd rd(fds[0]), wr(fds[1]);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork", "build step");
    if (pid == 0) {
        rd.reset();
        json reply;
        try {
            reply = {{"result", run_step(spec)}};
        } catch (const std::exception& e) {
            reply = error_reply(e);
        }
        std::string text = oci::to_message(reply);
        bool ok = true;
        try {
            write_all(wr.get(), text, "build step reply");
        } catch (const std::exception&) {
            ok = false;
        }
        ::_exit(ok ? 0 : 1);
    }
    wr.reset();
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(rd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) throw_errno("waitpid", "build step");
    json reply = oci::from_message(text);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && reply.is_object()) return reply;
    std::string how = WIFSIGNALED(st) ? "was killed by signal " + std::to_string(WTERMSIG(st))
                                      : "exited with status " + std::to_string(WEXITSTATUS(st));
    return {{"error", "the build step process " + how + " before it reported"}, {"hint", ""}};
}

std::optional<StepLayer> layer_from_result(const json& j) {
    if (!j.is_object() || !j.contains("layer") || j["layer"].is_null()) return std::nullopt;
    return StepLayer{oci::parse_descriptor(j["layer"]), oci::Digest::parse(j.at("diff_id").get<std::string>())};
}

}  // namespace

int serve_build_steps(int fd) {
    UniqueFd channel(fd);
    // The engine decides when the build stops (a terminal's ^C reaches the whole process group):
    // this helper ends when the channel closes, after removing what it was given, never halfway
    // through a step's commit.
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) ::signal(sig, SIG_IGN);
    for (;;) {
        std::optional<std::string> message = read_message(channel.get());
        if (!message) return 0;  // the engine closed the channel (or is gone)
        json request = oci::from_message(*message);
        const std::string op = request.is_object() ? request.value("op", std::string()) : std::string();
        if (op == "rm") {
            const std::string dir = request.value("path", std::string());
            if (dir.empty() || runtime::remove_tree_here(dir) != 0)
                std::cerr << "aishell: warning: build step helper: could not remove " << dir << "\n";
            continue;
        }
        json reply;
        try {
            if (op != "step" || !request.contains("spec")) throw Error("build step helper: malformed request");
            reply = run_step_in_child(step_spec_from_json(request["spec"]));
        } catch (const std::exception& e) {
            reply = error_reply(e);
        }
        if (!send_message(channel.get(), oci::to_message(reply))) return 1;
    }
}

StepHelper::StepHelper(const oci::Store& store, const runtime::IdMapping& mapping) : store_(store), mapping_(mapping) {}

StepHelper::~StepHelper() {
    if (!helper_) return;
    channel_.reset();
    try {
        if (int status = helper_->wait(); status != 0)
            std::cerr << "aishell: warning: the build step helper exited with status " << status << "\n";
    } catch (const std::exception& e) {
        std::cerr << "aishell: warning: " << e.what() << "\n";
    }
}

void StepHelper::start() {
    if (helper_) return;
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair", "build step helper");
    UniqueFd mine(fds[0]), theirs(fds[1]);
    helper_.emplace(runtime::spawn_in_userns(mapping_, kBuildStepServer, {std::to_string(theirs.get())}, {.keep_fd = theirs.get()}));
    channel_ = std::move(mine);  // theirs closes here: the helper's copy is the only one left
}

void StepHelper::lost(const std::string& what) {
    channel_.reset();
    int status = helper_->wait();
    helper_.reset();
    throw Error("build step helper: " + what + " (it exited with status " + std::to_string(status) + ")",
                "run the build again; if it persists, report it with the output above");
}

std::optional<StepLayer> StepHelper::run(const StepSpec& spec) {
    start();
    if (!send_message(channel_.get(), oci::to_message(json{{"op", "step"}, {"spec", step_spec_to_json(spec)}})))
        lost("the request could not be sent");
    std::optional<std::string> text = read_message(channel_.get());
    if (!text) lost("no reply");
    json reply = oci::from_message(*text);
    if (!reply.is_object()) lost("a malformed reply");
    if (reply.contains("error")) throw Error(reply["error"].get<std::string>(), reply.value("hint", std::string()));
    return layer_from_result(reply.value("result", json()));
}

void StepHelper::remove(const fs::path& dir) {
    if (channel_ && send_message(channel_.get(), oci::to_message(json{{"op", "rm"}, {"path", dir.string()}}))) return;
    runtime::remove_tree(mapping_, dir.string());
}

int run_build_step_here(const std::string& spec_path) {
    try {
        json spec = oci::from_message(read_file(spec_path, 16 * 1024 * 1024));
        if (!spec.is_object()) throw Error("build step spec " + spec_path + " is malformed");
        if (spec.contains("prepare")) {
            auto store = oci::Store::open(spec.at("store").get<std::string>());
            run_prepare_ops(store, spec["prepare"], spec.at("work").get<std::string>());
            return 0;
        }
        throw Error("build step spec " + spec_path + " has no prepare ops", "steps run in the build's step helper");
    } catch (const std::exception& e) {
        // The parent reads the message and reports it as its one error line.
        try {
            write_scratch_file(spec_path + ".error", e.what());
        } catch (const std::exception&) {
            std::cerr << "aishell: build step: " << e.what() << "\n";
        }
        return 1;
    }
}

void write_scratch_file(const fs::path& path, std::string_view data) {
    UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    write_all(fd.get(), data, path.string());
    if (::close(fd.release()) != 0) throw_errno("close", path.string());
}

}  // namespace aishell::composer
