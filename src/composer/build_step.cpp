// The in-namespace half of a build step (see build_step.hpp).
#include "composer/build_step.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
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
#include "oci/archive_api.hpp"
#include "oci/layer_write.hpp"
#include "oci/store.hpp"
#include "runtime/container.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::optional<CopyOwner> owner_from(const json& j) {
    if (!j.is_array()) return std::nullopt;
    return CopyOwner{j.at(0).get<std::uint32_t>(), j.at(1).get<std::uint32_t>()};
}

CopyRequest copy_request_from(const json& j) {
    CopyRequest r;
    r.sources = j.at("sources").get<std::vector<std::string>>();
    r.dest = j.at("dest").get<std::string>();
    r.chown = owner_from(j.value("chown", json()));
    if (j.contains("chmod") && j["chmod"].is_number()) r.chmod = j["chmod"].get<mode_t>();
    r.extract_archives = j.value("add", false);
    r.preserve_owner = j.value("preserve_owner", false);
    r.heredocs = j.value("heredocs", std::map<std::string, std::string>{});
    r.instruction = j.value("instruction", std::string("COPY"));
    return r;
}

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
void run_chrooted(const fs::path& rootfs, int src_fd, const json& spec, const oci::LayeredOwners* src_owners) {
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
    if (spec.contains("copy") && spec["copy"].is_object() && spec["copy"].value("add", false)) oci::load_libarchive();
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) {
        int status = 0;
        try {
            if (::chroot(rootfs.c_str()) != 0) throw_errno("chroot", rootfs.string());
            if (::chdir("/") != 0) throw_errno("chdir", "/");
            OwnerRecorder owners("/", upper.get());
            if (spec.contains("copy") && spec["copy"].is_object()) {
                const json& c = spec["copy"];
                std::optional<IgnoreMatcher> matcher;
                if (c.contains("ignore") && c["ignore"].is_array())
                    matcher.emplace(c["ignore"].get<std::vector<std::string>>());
                copy_files(src_fd, "/", copy_request_from(c), matcher ? &*matcher : nullptr, &owners, src_owners);
            }
            if (spec.contains("mkdir") && spec["mkdir"].is_object())
                make_dir_path(spec["mkdir"].at("path").get<std::string>(), owner_from(spec["mkdir"].value("chown", json())),
                              owners);
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

void apply_file_op(const oci::Store& store, const json& spec, const fs::path& run_dir) {
    for (auto d : {"upper", "work", "rootfs", "empty", "empty2", "src"}) make_dirs(run_dir / d, 0755);
    if (::unshare(CLONE_NEWNS) != 0) throw_errno("unshare", "mount namespace");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) throw_errno("make mounts private");
    const fs::path layers = store.layers_dir();
    std::string empty = relative_to(run_dir / "empty", layers);
    auto lowers = spec.value("lower", std::vector<std::string>{});
    lowers.push_back(empty);  // overlay wants a lowerdir; FROM scratch has none
    mount_layers_overlay(layers, lowers, run_dir / "rootfs", std::make_pair(run_dir / "upper", run_dir / "work"));

    UniqueFd src_fd;
    std::optional<oci::LayeredOwners> src_owners;  // what a --from source's layers recorded
    const json copy = spec.value("copy", json());
    if (copy.is_object() && copy.contains("src_layers") && copy["src_layers"].is_array()) {
        auto src_layers = copy["src_layers"].get<std::vector<std::string>>();
        src_owners = oci::LayeredOwners::load(layers, src_layers);
        // A read-only overlay needs two lowerdirs, and the same dir twice is refused (ELOOP).
        src_layers.push_back(relative_to(run_dir / "empty2", layers));
        mount_layers_overlay(layers, src_layers, run_dir / "src", std::nullopt);
        src_fd = UniqueFd(::open((run_dir / "src").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    } else if (copy.is_object()) {
        std::string dir = copy.at("src_dir").get<std::string>();
        src_fd = UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!src_fd) throw_errno("open build context", dir);
    }
    run_chrooted(run_dir / "rootfs", src_fd.get(), spec, src_owners ? &*src_owners : nullptr);
    ::umount2((run_dir / "rootfs").c_str(), MNT_DETACH);
    ::umount2((run_dir / "src").c_str(), MNT_DETACH);
}

json commit_upper(oci::Store& store, const json& spec, const fs::path& run_dir) {
    const fs::path upper = run_dir / "upper";
    UniqueFd fd(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_errno("open", upper.string());
    oci::LayerWriteOptions options;
    options.compression = spec.value("compression", std::string("gzip")) == "zstd" ? oci::media_type::Compression::Zstd
                                                                                  : oci::media_type::Compression::Gzip;
    if (spec.contains("clamp") && spec["clamp"].is_number()) options.clamp_mtime = spec["clamp"].get<std::int64_t>();
    // Written by a file step when an owner could not be set on disk; outside the upper dir.
    std::optional<oci::OwnerTable> owners = oci::read_owner_table(run_dir / "owners");
    if (owners) options.owners = &*owners;
    // What the lower layers recorded, for the entries this step only copied up.
    auto lower_owners = oci::LayeredOwners::load(store.layers_dir(), spec.value("lower", std::vector<std::string>{}));
    options.lower_owners = &lower_owners;
    auto layer = oci::write_layer(store, fd.get(), options);
    json result = {{"layer", nullptr}};
    if (!layer) return result;
    result["layer"] = oci::descriptor_to_json(layer->descriptor);
    result["diff_id"] = layer->diff_id.str();
    // The upper dir is already the layer in overlay format: it becomes layers/<hex> as is, with
    // the table of the owners its tar carries beside it (first: never a tree without its table).
    const std::string hex(layer->diff_id.encoded());
    fs::path target = store.layers_dir() / hex, table = oci::layer_owner_table_path(store.layers_dir(), hex);
    bool ours = false, raced = false;
    if (!fs::exists(target)) {
        if (!layer->owners.empty()) write_file_atomic(table, layer->owners.serialize(), 0600);
        ::syncfs(fd.get());
        ours = ::rename(upper.c_str(), target.c_str()) == 0;
        if (!ours && errno != EEXIST && errno != ENOTEMPTY) throw_errno("rename", target.string());
        raced = !ours;
    }
    // Another step made the same tree (from the same tar): the table must name its inodes.
    if (!ours && !layer->owners.empty() && (raced || !fs::exists(table))) {
        UniqueFd tree(::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!tree) throw_errno("open", target.string());
        write_file_atomic(table, oci::reidentify(layer->owners, tree.get()).serialize(), 0600);
    }
    return result;
}

}  // namespace

int run_build_step_here(const std::string& spec_path) {
    try {
        json spec = json::parse(read_file(spec_path, 16 * 1024 * 1024));
        auto store = oci::Store::open(spec.at("store").get<std::string>());
        if (spec.contains("prepare")) {
            run_prepare_ops(store, spec["prepare"], spec.at("work").get<std::string>());
            return 0;
        }
        fs::path run_dir = spec.at("run_dir").get<std::string>();
        bool file_op = (spec.contains("copy") && spec["copy"].is_object()) ||
                       (spec.contains("mkdir") && spec["mkdir"].is_object());
        if (file_op) apply_file_op(store, spec, run_dir);
        else if (spec.contains("stubs") && spec["stubs"].is_array())
            remove_mount_stubs(store, spec.value("lower", std::vector<std::string>{}),
                               spec["stubs"].get<std::vector<std::string>>(), run_dir);
        json result = commit_upper(store, spec, run_dir);
        write_scratch_file(spec.at("result").get<std::string>(), result.dump());
        return 0;
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

std::optional<StepLayer> read_step_result(const std::string& result_path) {
    json j = json::parse(read_file(result_path, 1 << 20));
    if (!j.contains("layer") || j["layer"].is_null()) return std::nullopt;
    return StepLayer{oci::parse_descriptor(j["layer"]), oci::Digest::parse(j.at("diff_id").get<std::string>())};
}

}  // namespace aishell::composer
