// Leases (see lease.hpp): the holder's side (create, join, add) and the remover's (the
// exclusive lock, reading the live leases).
#include "oci/lease.hpp"
#include "oci/store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/gc.hpp"

namespace aishell::oci {

namespace {

constexpr std::string_view kHeader = "aishell-lease 1";
// A build of a few thousand steps writes a few hundred KiB; anything near this is not a lease.
constexpr std::uint64_t kMaxLeaseFile = 16u << 20;

UniqueFd open_leases_dir(const fs::path& dir) {
    return open_file(dir, O_RDONLY | O_DIRECTORY);
}

// flock, retried on EINTR; false only for EWOULDBLOCK with LOCK_NB.
bool lock(int fd, int operation, const fs::path& what) {
    while (::flock(fd, operation) != 0) {
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK && (operation & LOCK_NB)) return false;
        throw_errno("lock", what.string());
    }
    return true;
}

// The shared flock on leases/ for the span of one append.
class SharedRegistryLock {
public:
    SharedRegistryLock(int dir, const fs::path& path) : dir_(dir) { lock(dir_, LOCK_SH, path); }
    SharedRegistryLock(const SharedRegistryLock&) = delete;
    SharedRegistryLock& operator=(const SharedRegistryLock&) = delete;
    ~SharedRegistryLock() { ::flock(dir_, LOCK_UN); }

private:
    int dir_;
};

bool is_lower_hex(std::string_view s, std::size_t length) {
    if (s.size() != length) return false;
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

std::string_view kind_name(LeaseKind kind) {
    switch (kind) {
        case LeaseKind::Blob: return "blob";
        case LeaseKind::Layer: return "layer";
        case LeaseKind::Volume: return "volume";
    }
    return "blob";
}

void check_entry(const LeaseEntry& e) {
    bool ok = false;
    switch (e.kind) {
        case LeaseKind::Blob: {
            auto d = Digest::try_parse(e.name);
            ok = d && d->is_sha256();
            break;
        }
        case LeaseKind::Layer: ok = is_lower_hex(e.name, 64); break;
        case LeaseKind::Volume: ok = is_volume_name(e.name); break;
    }
    if (!ok) throw Error("lease entry: malformed " + std::string(kind_name(e.kind)) + " name '" + e.name + "'");
}

}  // namespace

// ---- entries -------------------------------------------------------------------------------

LeaseEntry LeaseEntry::layer(const Digest& diff_id, bool made) {
    if (!diff_id.is_sha256()) throw Error("lease entry: diff_id " + diff_id.str() + " is not sha256");
    return {LeaseKind::Layer, std::string(diff_id.encoded()), made};
}

std::string format_lease_entry(const LeaseEntry& entry) {
    check_entry(entry);
    return std::string(entry.made ? "made " : "use ") + std::string(kind_name(entry.kind)) + " " + entry.name + "\n";
}

LeaseEntry parse_lease_entry(std::string_view line) {
    auto first = line.find(' ');
    auto second = first == std::string_view::npos ? first : line.find(' ', first + 1);
    if (second == std::string_view::npos) throw Error("malformed lease entry '" + std::string(line) + "'");
    std::string_view verb = line.substr(0, first), kind = line.substr(first + 1, second - first - 1);
    LeaseEntry e;
    e.name = std::string(line.substr(second + 1));
    if (verb == "made") e.made = true;
    else if (verb != "use") throw Error("lease entry '" + std::string(line) + "': unknown verb '" + std::string(verb) + "'");
    if (kind == "blob") e.kind = LeaseKind::Blob;
    else if (kind == "layer") e.kind = LeaseKind::Layer;
    else if (kind == "volume") e.kind = LeaseKind::Volume;
    else throw Error("lease entry '" + std::string(line) + "': unknown kind '" + std::string(kind) + "'");
    check_entry(e);
    return e;
}

std::vector<LeaseEntry> parse_lease_file(std::string_view text, const std::string& path) {
    return with_context("lease " + path, [&] {
        std::vector<LeaseEntry> entries;
        std::size_t line_no = 0;
        for (std::size_t pos = 0; pos < text.size();) {
            auto nl = text.find('\n', pos);
            ++line_no;
            if (nl == std::string_view::npos)
                throw Error("line " + std::to_string(line_no) + " is not terminated");
            std::string_view line = text.substr(pos, nl - pos);
            pos = nl + 1;
            if (line_no == 1) {
                if (line.substr(0, kHeader.size()) != kHeader || (line.size() > kHeader.size() && line[kHeader.size()] != ' '))
                    throw Error("not an aishell lease (line 1 is '" + std::string(line.substr(0, 40)) + "')");
                continue;
            }
            entries.push_back(with_context("line " + std::to_string(line_no), [&] { return parse_lease_entry(line); }));
        }
        if (line_no == 0) throw Error("empty lease file");
        return entries;
    });
}

std::vector<LeaseEntry> image_lease_entries(const Image& image) {
    std::vector<LeaseEntry> out;
    if (!image.manifest_descriptor.digest.empty()) out.push_back(LeaseEntry::blob(image.manifest_descriptor.digest));
    if (!image.config_digest.empty()) out.push_back(LeaseEntry::blob(image.config_digest));
    for (const auto& layer : image.manifest.layers) out.push_back(LeaseEntry::blob(layer.digest));
    for (const auto& diff_id : image.config.diff_ids()) out.push_back(LeaseEntry::layer(diff_id));
    return out;
}

// ---- the holder's side ---------------------------------------------------------------------

Lease::Lease(fs::path path, UniqueFd dir, UniqueFd file, bool owner) noexcept
    : path_(std::move(path)), dir_(std::move(dir)), file_(std::move(file)), owner_(owner) {}

std::shared_ptr<Lease> Lease::create(const Store& store, std::string_view command,
                                     const std::vector<LeaseEntry>& entries) {
    const fs::path dir_path = store.leases_dir();
    return with_context("take a lease in " + dir_path.string(), [&] {
        UniqueFd dir = open_leases_dir(dir_path);
        // Under the shared flock: a remover never sees the file before it is flocked (it would
        // take it for the dead lease of a crashed command).
        SharedRegistryLock registry(dir.get(), dir_path);
        UniqueFd file;
        std::string name;
        for (int attempt = 0; !file; ++attempt) {
            name = std::to_string(::getpid()) + "-" + random_hex(8);
            int fd = ::openat(dir.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd >= 0) file.reset(fd);
            else if (errno != EEXIST || attempt > 8) throw_errno("create", (dir_path / name).string());
        }
        auto lease = std::shared_ptr<Lease>(new Lease(dir_path / name, std::move(dir), std::move(file), true));
        lock(lease->file_.get(), LOCK_SH, lease->path_);
        std::string text = std::string(kHeader) + " " + std::string(command) + "\n";
        for (const auto& e : entries)
            if (lease->added_.insert(e).second) text += format_lease_entry(e);
        write_all(lease->file_.get(), text, lease->path_.string());
        return lease;
    });
}

std::shared_ptr<Lease> Lease::join(const fs::path& path) {
    return with_context("join lease " + path.string(), [&] {
        UniqueFd dir = open_leases_dir(path.parent_path());
        UniqueFd file = open_file(path, O_WRONLY | O_APPEND | O_NOFOLLOW);
        lock(file.get(), LOCK_SH, path);
        return std::shared_ptr<Lease>(new Lease(path, std::move(dir), std::move(file), false));
    });
}

Lease::~Lease() {
    if (owner_) ::unlinkat(dir_.get(), path_.filename().c_str(), 0);
}

void Lease::add(const std::vector<LeaseEntry>& entries) {
    std::string text;
    std::vector<LeaseEntry> fresh;
    for (const auto& e : entries)
        if (!added_.count(e)) {
            text += format_lease_entry(e);
            fresh.push_back(e);
        }
    if (text.empty()) return;
    with_context("add to lease " + path_.string(), [&] {
        SharedRegistryLock registry(dir_.get(), path_.parent_path());
        write_all(file_.get(), text, path_.string());
    });
    added_.insert(fresh.begin(), fresh.end());
}

std::vector<LeaseEntry> Lease::entries() const {
    return parse_lease_file(read_file(path_, kMaxLeaseFile), path_.string());
}

// ---- the remover's side --------------------------------------------------------------------

LeaseRemovalLock::LeaseRemovalLock(const Store& store) : path_(store.leases_dir()) {
    dir_ = open_leases_dir(path_);
    lock(dir_.get(), LOCK_EX, path_);
}

LiveLeases read_live_leases(const LeaseRemovalLock& held, const fs::path& except, bool keep_dead) {
    LiveLeases live;
    std::vector<std::string> names;
    {
        UniqueFd listing(::openat(held.dir_fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!listing) throw_errno("open", held.dir().string());
        DIR* d = ::fdopendir(listing.get());
        if (!d) throw_errno("read", held.dir().string());
        listing.release();
        while (dirent* ent = ::readdir(d)) {
            std::string name = ent->d_name;
            if (name != "." && name != "..") names.push_back(name);
        }
        ::closedir(d);
    }
    for (const auto& name : names) {
        const fs::path path = held.dir() / name;
        if (!except.empty() && path.filename() == except.filename()) continue;
        int fd = ::openat(held.dir_fd(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT) continue;
            throw_errno("open lease", path.string());
        }
        UniqueFd file(fd);
        struct stat st {};
        if (::fstat(fd, &st) != 0) throw_errno("stat", path.string());
        if (!S_ISREG(st.st_mode)) continue;  // not a lease; left alone
        if (lock(fd, LOCK_EX | LOCK_NB, path)) {
            // Nobody holds it: its command is gone, and with it the need.
            if (keep_dead || ::unlinkat(held.dir_fd(), name.c_str(), 0) == 0) live.dead.push_back(path);
            continue;
        }
        if (static_cast<std::uint64_t>(st.st_size) > kMaxLeaseFile)
            throw Error("lease " + path.string() + " is " + std::to_string(st.st_size) + " bytes, over the limit");
        std::string text(static_cast<std::size_t>(st.st_size), '\0');
        std::size_t got = 0;
        while (got < text.size()) {
            ssize_t n = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(got));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("read lease", path.string());
            if (n == 0) break;
            got += static_cast<std::size_t>(n);
        }
        text.resize(got);
        ++live.holders;
        for (const auto& e : parse_lease_file(text, path.string())) {
            switch (e.kind) {
                case LeaseKind::Blob: live.blobs.insert(Digest::parse(e.name)); break;
                case LeaseKind::Layer: live.layers.insert(e.name); break;
                case LeaseKind::Volume: live.volumes.insert(e.name); break;
            }
        }
    }
    return live;
}

}  // namespace aishell::oci
