// The aishell store: an OCI image layout under <root>/oci plus aishell's own areas.
//
//   <root>/version        store format version, checked on open
//   <root>/lock           flock: writers hold it exclusively; readers need no lock, because
//                         every file they read is replaced by rename
//   <root>/oci/           oci-layout, index.json, blobs/sha256/<hex>
//   <root>/layers/<hex>/  unpacked layer trees keyed by diff_id hex (runtime issue)
//   <root>/cache/         build step cache (its entries are GC roots)
//   <root>/tmp/           partial downloads and work dirs; never visible as blobs
//   <root>/leases/        one file per running command naming what it uses (lease.hpp)
//   <root>/chain/         the three-tier chain's record and build locks (composer/chain_record.hpp)
//   <root>/volumes/<name>/  named volumes (`-v NAME:/path`), made on first use
//   <root>/meta.json      small key/value facts (the foundation's reference and pull date, the id mapping)
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.hpp"
#include "oci/digest.hpp"
#include "oci/types.hpp"

namespace aishell::oci {

namespace fs = std::filesystem;

// The store format written to <root>/version. 2 added chain/ (the three-tier chain's record)
// and volumes/ (named volumes); nothing of format 1 changed meaning, so Store::open upgrades a
// format 1 store in place. A store of any other version is refused.
inline constexpr int kStoreFormatVersion = 2;

// A held flock on <root>/lock; released on destruction.
class StoreLock {
public:
    StoreLock() = default;
    explicit StoreLock(UniqueFd fd) : fd_(std::move(fd)) {}
    bool held() const noexcept { return static_cast<bool>(fd_); }

private:
    UniqueFd fd_;
};

// Docker's and podman's rule for a volume name: [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 255 bytes;
// so never "..", never a '/').
bool is_volume_name(std::string_view name) noexcept;

// A named image in index.json.
struct ImageEntry {
    std::string name;       // org.opencontainers.image.ref.name
    Descriptor descriptor;  // the manifest (or index) it names
};

class Store;
class Lease;

// Writes one blob: bytes go to a file in tmp/ while hashed; commit() verifies and renames into
// blobs/sha256/. Without commit() the temp file is removed, except a resumable partial, which is
// kept in tmp/ under a stable name so a later writer for the same digest continues from it.
class BlobWriter {
public:
    BlobWriter(BlobWriter&&) noexcept;
    BlobWriter& operator=(BlobWriter&&) noexcept;
    ~BlobWriter();

    void write(const void* data, std::size_t size);
    void write(std::string_view data) { write(data.data(), data.size()); }
    std::uint64_t size() const noexcept;  // bytes so far, including a resumed prefix
    // Verifies digest (and size when >= 0) and fsyncs; on a mismatch throws Error ("digest
    // mismatch: expected ..., got ...") and discards the partial. The blob is not visible yet.
    void finish(const Digest& expected, std::int64_t expected_size = -1);
    // Renames a finished blob into blobs/sha256/ and fsyncs the dir: now it is visible. A pull
    // finishes every blob first and publishes them together, so a failed pull adds no blob.
    // Through a store with a lease, the blob is leased before the rename and recorded as made
    // when it was not there yet.
    void publish();
    // finish() under whatever digest the bytes have (an archive's member whose digest is known
    // only once it is read, `aishell load`): fsynced, not visible yet; returns the digest.
    Digest finish_computed();
    // A read-only fd of the bytes written, to stream them again (a finished writer too).
    UniqueFd reopen() const;
    // finish() + publish().
    void commit(const Digest& expected, std::int64_t expected_size = -1);
    // Commits under whatever digest the bytes have (for blobs aishell creates).
    Digest commit_computed();
    // The bytes written so far (a resumed prefix included), for a blob that must be parsed
    // before anything is published (a pull checks the image config). Throws Error when there
    // are more than max_size.
    std::string read_back(std::uint64_t max_size) const;
    // Starts over from zero bytes (the server ignored a Range request).
    void restart();
    // Drops everything written (including a resumable partial).
    void discard() noexcept;

private:
    friend class Store;
    struct State;
    explicit BlobWriter(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// How a read checks a blob. Every blob was verified against its digest when it was written
// (BlobWriter::commit: temp file, hash of what was written, rename). Rehash verifies it again on
// every read (pull, build, inspect, GC). TrustStore checks only what is cheap (size limits, the
// length the descriptor gives): for what `exec` reads on every run, the image's manifest and
// config, where a rehash would load and initialise libcrypto (about 1 ms, a third of a whole
// ch-run) to guard against nothing that the layer trees beside them, which no run re-hashes,
// are not equally open to. The store is trusted as far as its owner (runtime README).
enum class BlobCheck { Rehash, TrustStore };

class Store {
public:
    // $AISHELL_STORE, else ${XDG_DATA_HOME:-~/.local/share}/aishell.
    static fs::path default_root();
    // Opens (creating when absent) the store at root; refuses an unknown format version.
    static Store open(const fs::path& root);

    const fs::path& root() const noexcept { return root_; }
    fs::path leases_dir() const { return root_ / "leases"; }
    fs::path oci_dir() const { return root_ / "oci"; }
    fs::path tmp_dir() const { return root_ / "tmp"; }
    fs::path layers_dir() const { return root_ / "layers"; }
    fs::path cache_dir() const { return root_ / "cache"; }
    fs::path volumes_dir() const { return root_ / "volumes"; }

    // volumes/<name>, the named volume `-v NAME:/path` binds, made (0755, in a 0700 volumes/)
    // when missing. name must be a volume name (is_volume_name). Lease it first (lease.hpp).
    fs::path ensure_volume(std::string_view name) const;

    StoreLock lock_exclusive() const;  // blocks; throws on error
    std::optional<StoreLock> try_lock_exclusive() const;

    // Blobs. Only sha256 digests are stored.
    fs::path blob_path(const Digest& d) const;
    bool has_blob(const Digest& d) const;
    std::optional<std::uint64_t> blob_size(const Digest& d) const;
    // Reads a blob, refusing one larger than max_size and (with BlobCheck::Rehash) verifying its
    // digest.
    std::string read_blob(const Digest& d, std::uint64_t max_size, BlobCheck check = BlobCheck::Rehash) const;
    // Writes data as a blob (verified, durable) and returns its digest.
    Digest put_blob(std::string_view data);
    // A writer for a blob. With resume_key (e.g. the expected digest), an existing partial in
    // tmp/ is continued: its bytes are re-hashed and size() starts at its length.
    BlobWriter begin_blob(std::optional<Digest> resume_key = std::nullopt);
    // Re-hashes a stored blob; false when missing or corrupt.
    bool verify_blob(const Digest& d) const;

    // index.json. Readers take no lock; mutators require the caller to hold lock_exclusive().
    std::vector<ImageEntry> list_images() const;
    std::optional<ImageEntry> find_image(std::string_view name) const;
    // Adds or replaces the entry named name (atomic index rewrite); when index.json already has
    // exactly one entry of that name with the same descriptor, it is left as it is (no write).
    void tag_image(std::string_view name, const Descriptor& manifest);
    bool untag_image(std::string_view name);

    // A copy of this store whose writes are recorded in lease (lease.hpp), as containerd's
    // content store adds what it writes to the lease in its context: each blob published
    // (BlobWriter::publish), each layer tree installed (layer_unpack, the build's commit).
    Store with_lease(std::shared_ptr<Lease> lease) const;
    Lease* lease() const noexcept { return lease_.get(); }

    // Small facts kept in meta.json (atomic rewrite; mutators require the lock).
    std::optional<std::string> get_meta(std::string_view key) const;
    void set_meta(std::string_view key, std::string_view value);
    void erase_meta(std::string_view key);

private:
    explicit Store(fs::path root) : root_(std::move(root)) {}
    fs::path root_;
    std::shared_ptr<Lease> lease_;
};

// Reads a manifest (or index) blob: size-limited, its length checked against d.size and (with
// BlobCheck::Rehash) its digest verified.
std::string read_manifest_blob(const Store& store, const Descriptor& d, BlobCheck check = BlobCheck::Rehash);
// Throws Error (the store is corrupt) when a blob read for d is not d.size bytes long.
void check_blob_length(const Descriptor& d, std::size_t actual);

// Garbage collection: mark from index.json (following indexes into manifests, manifests into
// config and layers), from extra_roots (the build cache's entries) and from every live lease
// (lease.hpp: a leased manifest keeps what it references), then sweep unmarked blobs, temp files
// in tmp/ older than stale_after, dead lease files and, with sweep_layers, layer trees that no
// marked config, extra_layer_roots entry or live lease names. Caller holds lock_exclusive(); the
// collection holds the leases' removal lock while it marks and sweeps.
struct GcResult {
    std::vector<Digest> removed_blobs;
    std::uint64_t removed_bytes = 0;
    std::vector<fs::path> removed_temp;
    std::vector<std::string> removed_layers;  // diff_id hex of the trees taken out of layers/
    // Where those trees went (tmp/gc-<hex>-<random>): the caller removes them, inside the user
    // namespace when they hold sub-id owned files (runtime::remove_tree); oci starts no process.
    // Until then they are stale temp files like any other.
    std::vector<fs::path> layer_trash;
    std::vector<fs::path> removed_leases;  // dead lease files
};
struct GcOptions {
    std::vector<Digest> extra_roots;
    std::vector<Digest> extra_layer_roots;  // diff_ids whose trees stay (the build cache's layers)
    std::chrono::seconds stale_after{24 * 3600};
    bool dry_run = false;
    bool sweep_layers = false;
    // A rollback: only these blobs may go (what the command made), and its own lease (this
    // path) protects nothing; no temp file is swept.
    std::optional<std::vector<Digest>> only_blobs;
    fs::path own_lease;
};
GcResult collect_garbage(Store& store, const GcOptions& options);

}  // namespace aishell::oci
