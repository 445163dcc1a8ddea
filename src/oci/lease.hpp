// Leases: a command's claim on the store objects it uses or made, so that nothing it relies on
// is removed under it (DESIGN.md "Store"). Modelled on containerd's leases (a lease names the
// resources a client holds; garbage collection keeps leased resources; a lease that has expired
// protects nothing), fitted to a tool with no daemon:
//
// - A lease is a file `<store>/leases/<pid>-<random>` that its holder keeps flocked (shared)
//   for as long as it lives. The kernel drops the flock when the last process holding the open
//   file is gone (aishell, or a container's PID 1 that inherited the fd), so the lease of a
//   crashed or killed command is recognisably dead: no pid reuse or start-time guessing.
// - It is text, appended to and never rewritten:
//       aishell-lease 1 <command>
//       <use|made> <blob|layer|volume> <name>
//   blob: a digest (sha256:<hex>); layer: the diff_id hex of layers/<hex>/; volume: a volume
//   name. "use": the holder relies on the object. "made": the holder created it (so a failed
//   build knows exactly what to take back; a made object is leased too). Writes are not
//   fsynced: a lease does not outlive a crash, its holder is gone then.
// - Protocol, "lease, then look": a holder appends the entries first (under a shared flock on
//   the leases/ directory) and only then checks that the object exists, makes it or uses it.
//   A remover (a build's rollback, GC, prune) holds the exclusive flock on leases/ while it
//   reads the live leases and takes objects out of the store (unlinks a blob; renames a tree
//   away), so an entry added before it started is seen, and one added after finds the object
//   gone and makes it again. Lock order: the store lock (when held) before leases/.
#pragma once

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.hpp"
#include "oci/digest.hpp"
#include "oci/image.hpp"
#include "oci/store.hpp"

namespace aishell::oci {

namespace fs = std::filesystem;

enum class LeaseKind { Blob, Layer, Volume };

struct LeaseEntry {
    LeaseKind kind = LeaseKind::Blob;
    std::string name;   // "sha256:<hex>", a diff_id hex, or a volume name
    bool made = false;  // created by the holder (not only used)

    static LeaseEntry blob(const Digest& d, bool made = false) { return {LeaseKind::Blob, d.str(), made}; }
    // The tree layers/<hex> of a layer with this diff_id.
    static LeaseEntry layer(const Digest& diff_id, bool made = false);
    static LeaseEntry volume(std::string name, bool made = false) { return {LeaseKind::Volume, std::move(name), made}; }
    bool operator==(const LeaseEntry&) const = default;
    auto operator<=>(const LeaseEntry&) const = default;
};

// One line of a lease file ("use blob sha256:..."), and its parser (throws Error naming what
// is wrong: an unknown verb or kind, a malformed digest, hex or volume name).
std::string format_lease_entry(const LeaseEntry& entry);
LeaseEntry parse_lease_entry(std::string_view line);
// A whole lease file: the header line, then entries; every line ends with '\n'.
std::vector<LeaseEntry> parse_lease_file(std::string_view text, const std::string& path);

// What an image needs while it runs: its manifest, config and layer blobs, and its layer trees.
std::vector<LeaseEntry> image_lease_entries(const Image& image);

class Lease {
public:
    // Creates and holds a new lease (leases/<pid>-<random>) for command ("exec", "build"),
    // already naming entries. About ten syscalls, no fsync: cheap enough for every exec.
    static std::shared_ptr<Lease> create(const Store& store, std::string_view command,
                                         const std::vector<LeaseEntry>& entries = {});
    // Opens an existing lease (its creator's path) to add entries from a helper process (the
    // build's step helper, `__unpack`); it holds the lease too while it lives, and leaves the
    // file to its creator.
    static std::shared_ptr<Lease> join(const fs::path& path);
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    // The creator removes the file: the lease ends (processes that inherited its fd hold a
    // lease nobody can see any more, which protects nothing, as intended after the command).
    ~Lease();

    // Appends the entries this object has not appended yet (one write, under the shared flock
    // on leases/). Throws Error naming the lease.
    void add(const std::vector<LeaseEntry>& entries);
    const fs::path& path() const noexcept { return path_; }
    // The entries in the file (this lease's own, including its helpers' additions).
    std::vector<LeaseEntry> entries() const;

private:
    Lease(fs::path path, UniqueFd dir, UniqueFd file, bool owner) noexcept;
    fs::path path_;
    UniqueFd dir_;   // leases/, for its flock and unlinkat
    UniqueFd file_;  // O_APPEND, flocked (shared) while this object lives
    bool owner_;
    std::set<LeaseEntry> added_;
};

// The exclusive side, for removers: while it is held no lease is created or extended. Taken
// after the store lock when both are held.
class LeaseRemovalLock {
public:
    explicit LeaseRemovalLock(const Store& store);
    LeaseRemovalLock(const LeaseRemovalLock&) = delete;
    LeaseRemovalLock& operator=(const LeaseRemovalLock&) = delete;
    int dir_fd() const noexcept { return dir_.get(); }
    const fs::path& dir() const noexcept { return path_; }

private:
    fs::path path_;
    UniqueFd dir_;
};

// What the live leases hold.
struct LiveLeases {
    std::size_t holders = 0;  // live leases read
    std::set<Digest> blobs;
    std::set<std::string> layers;   // diff_id hex
    std::set<std::string> volumes;
    std::vector<fs::path> dead;  // dead lease files (removed unless keep_dead)
    bool holds_layer(const Digest& diff_id) const { return layers.count(std::string(diff_id.encoded())) > 0; }
};

// Reads every live lease but the one at `except` (a remover's own) and removes the dead ones
// (unless keep_dead: a dry run). A live lease that does not parse stops the remover (Error):
// what it holds is unknown.
LiveLeases read_live_leases(const LeaseRemovalLock& held, const fs::path& except = {}, bool keep_dead = false);

}  // namespace aishell::oci
