#include "oci/store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/json_parse.hpp"
#include "oci/json_text.hpp"
#include "oci/lease.hpp"

namespace aishell::oci {

using nlohmann::json;

namespace {

constexpr std::string_view kEmptyIndex =
    R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})";
constexpr std::string_view kOciLayoutFile = R"({"imageLayoutVersion":"1.0.0"})";

// A finished writer's fd may name a published blob: writing through it would corrupt the store.
constexpr const char* kWriterFinished = "blob writer used after commit or discard";

void require_sha256(const Digest& d) {
    if (!d.is_sha256()) throw Error("unsupported digest algorithm in " + d.str(), "aishell stores sha256 blobs only");
}

bool same_inode(int fd, const fs::path& path) {
    struct stat by_fd {}, by_path {};
    if (::fstat(fd, &by_fd) < 0 || ::stat(path.c_str(), &by_path) < 0) return false;
    return by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino;
}

void write_if_absent(const fs::path& path, std::string_view content) {
    if (fs::exists(path)) return;
    write_file_atomic(path, content);
}

}  // namespace

// ---- BlobWriter ----------------------------------------------------------------------------

struct BlobWriter::State {
    fs::path blobs_dir;
    fs::path path;  // the temp or partial file
    UniqueFd fd;
    Sha256 hash;
    bool resumable = false;  // kept in tmp/ on destruction for a later resume
    bool done = false;
    std::optional<Digest> digest;  // set by finish()
    std::shared_ptr<Lease> lease;  // the store's, if any: publish() records the blob there
};

BlobWriter::BlobWriter(std::unique_ptr<State> state) : state_(std::move(state)) {}
BlobWriter::BlobWriter(BlobWriter&&) noexcept = default;
BlobWriter& BlobWriter::operator=(BlobWriter&&) noexcept = default;

BlobWriter::~BlobWriter() {
    if (state_ && !state_->done && !state_->resumable) ::unlink(state_->path.c_str());
}

void BlobWriter::write(const void* data, std::size_t size) {
    if (!state_ || state_->done) throw Error(kWriterFinished);
    write_all(state_->fd.get(), std::string_view(static_cast<const char*>(data), size), state_->path.string());
    state_->hash.update(data, size);
}

std::uint64_t BlobWriter::size() const noexcept { return state_ ? state_->hash.bytes() : 0; }

void BlobWriter::discard() noexcept {
    if (!state_ || state_->done) return;
    ::unlink(state_->path.c_str());
    state_->done = true;
}

std::string BlobWriter::read_back(std::uint64_t max_size) const {
    if (!state_ || state_->done) throw Error(kWriterFinished);
    if (size() > max_size)
        throw Error(state_->path.string() + " is " + std::to_string(size()) + " bytes, over the limit of " +
                    std::to_string(max_size));
    std::string data(size(), '\0');
    std::size_t have = 0;
    while (have < data.size()) {
        ssize_t n = ::pread(state_->fd.get(), data.data() + have, data.size() - have, static_cast<off_t>(have));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read", state_->path.string());
        if (n == 0) throw Error("read " + state_->path.string() + ": the file is shorter than what was written");
        have += static_cast<std::size_t>(n);
    }
    return data;
}

void BlobWriter::restart() {
    if (::ftruncate(state_->fd.get(), 0) < 0) throw_errno("truncate", state_->path.string());
    if (::lseek(state_->fd.get(), 0, SEEK_SET) < 0) throw_errno("seek", state_->path.string());
    state_->hash = Sha256();
}

void BlobWriter::finish(const Digest& expected, std::int64_t expected_size) {
    require_sha256(expected);
    if (expected_size >= 0 && size() != static_cast<std::uint64_t>(expected_size)) {
        std::uint64_t got = size();
        discard();
        throw Error("size mismatch for " + expected.str() + ": expected " + std::to_string(expected_size) +
                    " bytes, got " + std::to_string(got));
    }
    Digest actual = state_->hash.finish();
    if (actual != expected) {
        discard();
        throw Error("digest mismatch: expected " + expected.str() + ", got " + actual.str(),
                    "the registry or a proxy served corrupted data");
    }
    fsync_fd(state_->fd.get(), state_->path.string());
    state_->digest = expected;
}

void BlobWriter::publish() {
    if (!state_->digest) throw Error("internal: publish before finish for " + state_->path.string());
    fs::path target = state_->blobs_dir / std::string(state_->digest->encoded());
    // Lease, then look: once the lease names the blob no remover takes it, so "it was there"
    // stays true and the blob is not ours to take back; otherwise this rename made it.
    if (state_->lease) state_->lease->add({LeaseEntry::blob(*state_->digest)});
    struct stat st {};
    const bool existed = state_->lease && ::lstat(target.c_str(), &st) == 0;
    if (::rename(state_->path.c_str(), target.c_str()) < 0) throw_errno("rename blob into place", target.string());
    state_->done = true;
    fsync_dir(state_->blobs_dir);
    if (state_->lease && !existed) state_->lease->add({LeaseEntry::blob(*state_->digest, true)});
}

void BlobWriter::commit(const Digest& expected, std::int64_t expected_size) {
    if (!state_ || state_->done) throw Error(kWriterFinished);
    finish(expected, expected_size);
    publish();
}

Digest BlobWriter::finish_computed() {
    if (!state_ || state_->done) throw Error(kWriterFinished);
    Digest actual = state_->hash.finish();
    fsync_fd(state_->fd.get(), state_->path.string());
    state_->digest = actual;
    return actual;
}

UniqueFd BlobWriter::reopen() const {
    if (!state_ || state_->done) throw Error(kWriterFinished);
    return open_file(state_->path, O_RDONLY);
}

Digest BlobWriter::commit_computed() {
    Digest actual = finish_computed();
    publish();
    return actual;
}

// ---- Store ---------------------------------------------------------------------------------

fs::path Store::default_root() {
    if (auto dir = get_env("AISHELL_STORE")) return *dir;
    if (auto xdg = get_env("XDG_DATA_HOME")) return fs::path(*xdg) / "aishell";
    return home_dir() / ".local" / "share" / "aishell";
}

namespace {

// A store is as trusted as its owner: its layer trees become root filesystems, its blobs become
// images and its cache entries become layers of the caller's builds. Another user who owns or
// can write one of its parts can put a /bin/sh (or a setuid binary, which on the host is
// setuid to the caller) under a container the caller runs. So the store is refused unless the
// caller owns each part and no one else can write it, as sshd's StrictModes refuses a loose
// ~/.ssh; and it is made 0700 (podman keeps its storage 0700 for the same reason).
// The parts: the root, oci/, layers/, cache/, tmp/, leases/, chain/, volumes/ and, where they
// exist, sources/ (push's blob sources) and meta.json (the id mapping the layer trees are made
// for). One stat each: exec pays ~9.
constexpr std::string_view kStoreDirs[] = {"oci", "layers", "cache", "tmp", "leases", "chain", "volumes"};

std::string octal_mode(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

void check_private(const struct stat& st, const fs::path& path, const fs::path& root) {
    uid_t me = ::geteuid();
    if (st.st_uid != me)
        throw Error(path.string() + " belongs to uid " + std::to_string(st.st_uid) + ", not to you (uid " +
                        std::to_string(me) + "): whoever owns it decides what aishell runs as you",
                    "use a store of your own (--store DIR or AISHELL_STORE), or `chown -R " + std::to_string(me) +
                        " " + root.string() + "` as root");
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        throw Error(path.string() + " is writable by " + ((st.st_mode & S_IWOTH) ? "other users" : "its group") +
                        " (mode " + octal_mode(st.st_mode) + "): they could change what aishell runs as you",
                    "chmod go-w " + path.string());
}

// stat() of root/name (following a symlink, as every later use does); false when absent.
bool stat_part(int root_fd, const char* name, const fs::path& path, struct stat& st) {
    if (::fstatat(root_fd, name, &st, 0) == 0) return true;
    if (errno != ENOENT) throw_errno("stat", path.string());
    return false;
}

// mkdir 0700 and chmod: the mode must not depend on the umask (002 would make it group-writable).
void make_private_dir(int parent_fd, const char* name, const fs::path& path) {
    if (::mkdirat(parent_fd, name, 0700) < 0) {
        if (errno == EEXIST) return;
        throw_errno("mkdir", path.string());
    }
    if (::fchmodat(parent_fd, name, 0700, 0) < 0) throw_errno("chmod", path.string());
}

// Creates what is missing (the root 0700, its parents as `mkdir -p` would) and refuses a store
// that is not the caller's alone. A root that others may read or enter (a store made before
// stores were made 0700) is closed to them: nobody else may use it anyway.
void open_private_root(const fs::path& root) {
    if (::mkdir(root.c_str(), 0700) < 0 && errno == ENOENT && root.has_parent_path())
        make_dirs(root.parent_path());
    make_private_dir(AT_FDCWD, root.c_str(), root);
    UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) throw_errno("open", root.string());
    struct stat st {};
    if (::fstat(root_fd.get(), &st) < 0) throw_errno("stat", root.string());
    check_private(st, root, root);
    if ((st.st_mode & 077) != 0 && ::chmod(root.c_str(), 0700) < 0) throw_errno("chmod", root.string());
    for (std::string_view dir : kStoreDirs) {
        std::string name(dir);
        fs::path path = root / name;
        if (!stat_part(root_fd.get(), name.c_str(), path, st)) {
            make_private_dir(root_fd.get(), name.c_str(), path);
            if (::fstatat(root_fd.get(), name.c_str(), &st, 0) < 0) throw_errno("stat", path.string());
        }
        if (!S_ISDIR(st.st_mode)) throw SystemError(ENOTDIR, "open store part", path.string());
        check_private(st, path, root);
    }
    for (const char* name : {"sources", "meta.json"})
        if (stat_part(root_fd.get(), name, root / name, st)) check_private(st, root / name, root);
}

}  // namespace

namespace {

StoreLock take_lock(const fs::path& root, int operation);

std::optional<std::string> read_version(const fs::path& version_file) {
    auto version = read_file_if_exists(version_file, 64);
    if (!version) return std::nullopt;
    std::string v = *version;
    while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
    return v;
}

// Format 1 -> 2 (the three-tier chain): version 2 adds chain/ (the chain's record and build
// locks, made by open_private_root) and volumes/ (named volumes); nothing of format 1 changes
// meaning, so the upgrade is writing the new version once both exist (open_private_root made them). The chain adopts a store
// without a record from its index names on first use (composer/chain_record.hpp). Under the
// store lock, so two processes opening an old store upgrade it once; an older aishell then
// refuses the store, which it would misread (it knows no record to keep in step with the index).
void upgrade_store(const fs::path& root, const std::string& from) {
    StoreLock lock = take_lock(root, LOCK_EX);
    fs::path version_file = root / "version";
    if (read_version(version_file) != from) return;  // another process upgraded it meanwhile
    if (from == "1") write_file_atomic(version_file, std::to_string(kStoreFormatVersion) + "\n");
}

}  // namespace

bool is_volume_name(std::string_view s) noexcept {
    if (s.empty() || s.size() > 255) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) return false;
    }
    return true;
}

fs::path Store::ensure_volume(std::string_view name) const {
    if (!is_volume_name(name))
        throw Error("'" + std::string(name) + "' is not a volume name",
                    "a volume name is letters, digits, '_', '.' and '-', starting with a letter or digit");
    fs::path dir = volumes_dir() / std::string(name);
    // Private like every store part (checked on open); the volume itself 0755 as Docker's and
    // podman's: users of the container other than its owner may read it.
    make_private_dir(AT_FDCWD, volumes_dir().c_str(), volumes_dir());
    if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) throw_errno("mkdir", dir.string());
    struct stat st {};
    if (::lstat(dir.c_str(), &st) < 0) throw_errno("stat", dir.string());
    if (!S_ISDIR(st.st_mode)) throw SystemError(ENOTDIR, "open volume", dir.string());
    return dir;
}

Store Store::open(const fs::path& root_in) {
    fs::path root = fs::absolute(root_in);
    return with_context("open store " + root.string(), [&] {
        open_private_root(root);
        fs::path version_file = root / "version";
        if (auto v = read_version(version_file)) {
            if (*v == "1") upgrade_store(root, *v);
            else if (*v != std::to_string(kStoreFormatVersion))
                throw Error("store format version " + *v + " is not supported (this aishell uses " +
                                std::to_string(kStoreFormatVersion) + ")",
                            "use the aishell release that created it, or point --store at a new directory");
        }
        make_dirs(root / "oci" / "blobs" / "sha256", 0700);
        write_if_absent(root / "oci" / "oci-layout", kOciLayoutFile);
        write_if_absent(root / "oci" / "index.json", kEmptyIndex);
        write_if_absent(version_file, std::to_string(kStoreFormatVersion) + "\n");
        return Store(root);
    });
}

namespace {
StoreLock take_lock(const fs::path& root, int operation) {
    UniqueFd fd = open_file(root / "lock", O_RDWR | O_CREAT, 0644);
    while (::flock(fd.get(), operation) < 0) {
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK) return StoreLock();
        throw_errno("lock store", (root / "lock").string());
    }
    return StoreLock(std::move(fd));
}
}  // namespace

Store Store::with_lease(std::shared_ptr<Lease> lease) const {
    Store copy = *this;
    copy.lease_ = std::move(lease);
    return copy;
}

StoreLock Store::lock_exclusive() const { return take_lock(root_, LOCK_EX); }

std::optional<StoreLock> Store::try_lock_exclusive() const {
    StoreLock lock = take_lock(root_, LOCK_EX | LOCK_NB);
    if (!lock.held()) return std::nullopt;
    return lock;
}

fs::path Store::blob_path(const Digest& d) const {
    require_sha256(d);
    return oci_dir() / "blobs" / "sha256" / std::string(d.encoded());
}

bool Store::has_blob(const Digest& d) const {
    if (!d.is_sha256()) return false;
    struct stat st {};
    return ::stat(blob_path(d).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::optional<std::uint64_t> Store::blob_size(const Digest& d) const {
    struct stat st {};
    if (::stat(blob_path(d).c_str(), &st) < 0) return std::nullopt;
    return static_cast<std::uint64_t>(st.st_size);
}

std::string Store::read_blob(const Digest& d, std::uint64_t max_size, BlobCheck check) const {
    return with_context("read blob " + d.short_form(), [&] {
        std::string data = read_file(blob_path(d), max_size);
        if (check == BlobCheck::TrustStore) return data;
        Digest actual = sha256_of(data);
        if (actual != d)
            throw Error("blob is corrupt: content hashes to " + actual.str(),
                        "pull the image again to repair the store");
        return data;
    });
}

Digest Store::put_blob(std::string_view data) {
    Digest d = sha256_of(data);
    if (lease_) lease_->add({LeaseEntry::blob(d)});  // lease, then look (lease.hpp)
    if (has_blob(d)) return d;
    BlobWriter writer = begin_blob();
    writer.write(data);
    writer.commit(d, static_cast<std::int64_t>(data.size()));
    return d;
}

BlobWriter Store::begin_blob(std::optional<Digest> resume_key) {
    auto state = std::make_unique<BlobWriter::State>();
    state->blobs_dir = oci_dir() / "blobs" / "sha256";
    state->lease = lease_;
    if (resume_key) {
        require_sha256(*resume_key);
        fs::path partial = tmp_dir() / ("partial-" + std::string(resume_key->encoded()));
        UniqueFd fd = open_file(partial, O_RDWR | O_CREAT, 0644);
        // One writer per partial: a second concurrent writer gets a fresh temp file instead.
        // After taking the lock the path must still name the inode we locked: the previous
        // holder may have committed (renamed it into blobs/) between our open and our flock,
        // and appending to that inode would corrupt a published blob.
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0 && same_inode(fd.get(), partial)) {
            char buf[1 << 16];
            for (;;) {
                ssize_t n = ::read(fd.get(), buf, sizeof buf);
                if (n < 0) {
                    if (errno == EINTR) continue;
                    throw_errno("read partial blob", partial.string());
                }
                if (n == 0) break;
                state->hash.update(buf, static_cast<std::size_t>(n));
            }
            state->path = partial;
            state->fd = std::move(fd);
            state->resumable = true;
            return BlobWriter(std::move(state));
        }
    }
    TempFile tmp(tmp_dir(), "blob");
    state->path = tmp.path();
    state->fd.reset(::dup(tmp.fd()));
    if (!state->fd) throw_errno("dup", tmp.path().string());
    tmp.keep();  // the writer now owns the file's lifetime
    return BlobWriter(std::move(state));
}

bool Store::verify_blob(const Digest& d) const {
    if (!has_blob(d)) return false;
    int fd = ::open(blob_path(d).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    UniqueFd owner(fd);
    Sha256 h;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (n == 0) break;
        h.update(buf, static_cast<std::size_t>(n));
    }
    return h.finish() == d;
}

// ---- index.json ----------------------------------------------------------------------------

namespace {

json read_index_json(const Store& store) {
    fs::path path = store.oci_dir() / "index.json";
    std::string bytes = read_file(path, kMaxManifestSize);
    json j = parse_json(bytes);
    if (j.is_discarded() || !j.is_object() || !j.contains("manifests") || !j["manifests"].is_array())
        throw Error(path.string() + " is not a valid image index");
    return j;
}

void write_index_json(const Store& store, const json& j) {
    write_file_atomic(store.oci_dir() / "index.json", json_document(j));
}

std::string ref_name_of(const json& entry) {
    auto ann = entry.find("annotations");
    if (ann == entry.end() || !ann->is_object()) return {};
    auto it = ann->find(std::string(kRefNameAnnotation));
    return it != ann->end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::vector<ImageEntry> Store::list_images() const {
    std::vector<ImageEntry> out;
    json index = read_index_json(*this);
    for (const auto& entry : index["manifests"]) {
        std::string name = ref_name_of(entry);
        if (name.empty()) continue;
        out.push_back({name, with_context("index.json entry " + name, [&] { return parse_descriptor(entry); })});
    }
    return out;
}

std::optional<ImageEntry> Store::find_image(std::string_view name) const {
    for (auto& entry : list_images())
        if (entry.name == name) return entry;
    return std::nullopt;
}

void Store::tag_image(std::string_view name, const Descriptor& manifest) {
    json index = read_index_json(*this);
    Descriptor named = manifest;
    named.platform.reset();
    named.annotations[std::string(kRefNameAnnotation)] = std::string(name);
    const json wanted = descriptor_to_json(named);
    json kept = json::array();
    std::size_t with_name = 0, identical = 0;
    for (auto& entry : index["manifests"]) {
        if (ref_name_of(entry) != name) {
            kept.push_back(entry);
            continue;
        }
        ++with_name;
        if (entry == wanted) ++identical;
    }
    // Already named exactly so: no rewrite. A rewrite is a temp file, two fsyncs and a rename
    // (4-15 ms on a busy disk), which every fully cached `build -t` paid for nothing.
    if (with_name == 1 && identical == 1) return;
    kept.push_back(wanted);
    index["manifests"] = kept;
    write_index_json(*this, index);
}

bool Store::untag_image(std::string_view name) {
    json index = read_index_json(*this);
    json kept = json::array();
    bool removed = false;
    for (auto& entry : index["manifests"]) {
        if (ref_name_of(entry) == name)
            removed = true;
        else
            kept.push_back(entry);
    }
    if (removed) {
        index["manifests"] = kept;
        write_index_json(*this, index);
    }
    return removed;
}

// ---- meta.json -----------------------------------------------------------------------------

namespace {
json read_meta(const Store& store) {
    auto bytes = read_file_if_exists(store.root() / "meta.json", 1 << 20);
    if (!bytes) return json::object();
    json j = parse_json(*bytes);
    if (j.is_discarded() || !j.is_object()) throw Error((store.root() / "meta.json").string() + " is not a JSON object");
    return j;
}
}  // namespace

std::optional<std::string> Store::get_meta(std::string_view key) const {
    json meta = read_meta(*this);
    auto it = meta.find(std::string(key));
    if (it == meta.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
}

void Store::set_meta(std::string_view key, std::string_view value) {
    json meta = read_meta(*this);
    meta[std::string(key)] = std::string(value);
    write_file_atomic(root_ / "meta.json", json_document(meta, 2) + "\n");
}

void Store::erase_meta(std::string_view key) {
    json meta = read_meta(*this);
    if (meta.erase(std::string(key)) > 0) write_file_atomic(root_ / "meta.json", json_document(meta, 2) + "\n");
}

std::string read_manifest_blob(const Store& store, const Descriptor& d, BlobCheck check) {
    if (d.size > static_cast<std::int64_t>(kMaxManifestSize))
        throw Error("manifest " + d.digest.short_form() + " is " + std::to_string(d.size) +
                    " bytes, over the limit of " + std::to_string(kMaxManifestSize));
    std::string bytes = store.read_blob(d.digest, kMaxManifestSize, check);
    check_blob_length(d, bytes.size());
    return bytes;
}

void check_blob_length(const Descriptor& d, std::size_t actual) {
    if (d.size >= 0 && static_cast<std::uint64_t>(d.size) != actual)
        throw Error("blob " + d.digest.short_form() + " is corrupt: " + std::to_string(actual) + " bytes, its descriptor says " +
                        std::to_string(d.size),
                    "pull the image again to repair the store");
}

}  // namespace aishell::oci
