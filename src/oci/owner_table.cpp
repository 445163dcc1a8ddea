// The intended-owner side table of a layer tree (see owner_table.hpp).
#include "oci/owner_table.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <charconv>
#include <limits>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"

namespace aishell::oci {

namespace {

constexpr std::uint32_t kNoId = std::numeric_limits<std::uint32_t>::max();  // chown's "unchanged"

struct TypeLetter {
    mode_t type;
    char letter;
};
constexpr TypeLetter kTypes[] = {{S_IFREG, 'f'}, {S_IFDIR, 'd'}, {S_IFLNK, 'l'}, {S_IFCHR, 'c'},
                                 {S_IFBLK, 'b'}, {S_IFIFO, 'p'}, {S_IFSOCK, 's'}};

char type_letter(mode_t type) {
    for (const auto& t : kTypes)
        if (t.type == type) return t.letter;
    throw Error("owner table: unknown file type " + std::to_string(type));
}

std::optional<mode_t> letter_type(std::string_view field) {
    if (field.size() != 1) return std::nullopt;
    for (const auto& t : kTypes)
        if (t.letter == field[0]) return t.type;
    return std::nullopt;
}

bool needs_escape(unsigned char c) { return c <= 0x20 || c == '%' || c == 0x7f; }

std::string escape_path(std::string_view path) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(path.size());
    for (unsigned char c : path) {
        if (!needs_escape(c)) {
            out += static_cast<char>(c);
            continue;
        }
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
    }
    return out;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;  // lower case is not the canonical form
}

// nullopt with *problem set when the field is not an escaped path.
std::optional<std::string> unescape_path(std::string_view field, std::string* problem) {
    std::string out;
    out.reserve(field.size());
    for (std::size_t i = 0; i < field.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(field[i]);
        if (c != '%') {
            if (needs_escape(c)) {
                *problem = "unescaped control byte, space or '%' in the path";
                return std::nullopt;
            }
            out += static_cast<char>(c);
            continue;
        }
        int hi = i + 2 < field.size() ? hex_value(field[i + 1]) : -1;
        int lo = hi >= 0 ? hex_value(field[i + 2]) : -1;
        if (lo < 0) {
            *problem = "bad %XX escape in the path";
            return std::nullopt;
        }
        unsigned char decoded = static_cast<unsigned char>(hi * 16 + lo);
        if (!needs_escape(decoded)) {
            *problem = "needless %XX escape in the path";
            return std::nullopt;
        }
        out += static_cast<char>(decoded);
        i += 2;
    }
    return out;
}

// Canonical unsigned decimal (no sign, no leading zero) up to max.
std::optional<std::uint64_t> parse_decimal(std::string_view field, std::uint64_t max) {
    if (field.empty() || field.size() > 20 || (field.size() > 1 && field[0] == '0')) return std::nullopt;
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
    if (ec != std::errc() || end != field.data() + field.size() || value > max) return std::nullopt;
    return value;
}

// "-" (none) or "<sec>.<9 digits>", sec possibly negative.
bool parse_btime(std::string_view field, std::optional<BirthTime>* out) {
    if (field == "-") {
        out->reset();
        return true;
    }
    auto dot = field.find('.');
    if (dot == std::string_view::npos || field.size() - dot - 1 != 9) return false;
    std::string_view sec = field.substr(0, dot), nsec = field.substr(dot + 1);
    bool negative = !sec.empty() && sec[0] == '-';
    if (negative) sec.remove_prefix(1);
    auto s = parse_decimal(sec, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
    if (!s || (negative && *s == 0)) return false;
    std::uint32_t n = 0;
    for (char c : nsec) {
        if (c < '0' || c > '9') return false;
        n = n * 10 + static_cast<std::uint32_t>(c - '0');
    }
    *out = BirthTime{negative ? -static_cast<std::int64_t>(*s) : static_cast<std::int64_t>(*s), n};
    return true;
}

std::string format_btime(const std::optional<BirthTime>& t) {
    if (!t) return "-";
    std::string nsec = std::to_string(t->nsec);
    return std::to_string(t->sec) + "." + std::string(9 - nsec.size(), '0') + nsec;
}

// The problem with path, or "" when it is a cleaned layer path.
std::string path_problem(std::string_view path) {
    if (path.empty()) return "empty path (the layer root is no entry)";
    if (path.size() > OwnerTable::kMaxPathBytes) return "path longer than 4095 bytes";
    if (path.front() == '/') return "absolute path";
    if (path.back() == '/') return "trailing '/'";
    if (path.find('\0') != std::string_view::npos) return "NUL byte in the path";
    std::size_t start = 0;
    while (start <= path.size()) {
        std::size_t slash = path.find('/', start);
        if (slash == std::string_view::npos) slash = path.size();
        std::string_view comp = path.substr(start, slash - start);
        if (comp.empty()) return "empty path component";
        if (comp == "." || comp == "..") return "'.' or '..' component";
        if (comp.size() > OwnerTable::kMaxComponentBytes) return "path component longer than 255 bytes";
        start = slash + 1;
    }
    return {};
}

}  // namespace

std::optional<EntryIdentity> entry_identity_at(int dirfd, const std::string& name) {
    struct statx stx {};
    const int empty_path = name.empty() ? AT_EMPTY_PATH : 0;  // dirfd is the entry itself
    if (::statx(dirfd, name.c_str(), AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | empty_path,
                STATX_TYPE | STATX_INO | STATX_NLINK | STATX_BTIME, &stx) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
        throw_errno("statx", name);
    }
    EntryIdentity id;
    id.type = stx.stx_mode & S_IFMT;
    id.ino = stx.stx_ino;
    id.nlink = stx.stx_nlink;
    if (stx.stx_mask & STATX_BTIME) id.btime = BirthTime{stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec};
    return id;
}

void check_layer_path(std::string_view path) {
    if (std::string problem = path_problem(path); !problem.empty())
        throw Error("owner table: " + problem + ": '" + escape_path(path) + "'");
}

void OwnerTable::set(const std::string& path, const OwnerRecord& record) {
    check_layer_path(path);
    if (record.owner.uid == kNoId || record.owner.gid == kNoId)
        throw Error("owner table: " + escape_path(path) + ": id 4294967295 is not an owner");
    type_letter(record.type);
    auto it = records_.find(path);
    if (it != records_.end()) {
        it->second = record;
    } else {
        if (records_.size() >= kMaxRecords)
            throw Error("owner table: more than " + std::to_string(kMaxRecords) + " records",
                        "split the step: one COPY of this many files with an owner the store cannot map");
        records_.emplace(path, record);
    }
    by_ino_.reset();
}

bool OwnerTable::erase(const std::string& path) {
    by_ino_.reset();
    return records_.erase(path) > 0;
}

std::size_t OwnerTable::erase_tree(const std::string& path) {
    by_ino_.reset();
    std::size_t n = records_.erase(path);
    // Everything beneath sorts in [path + "/", path + "0"): '0' follows '/' in bytewise order.
    auto first = records_.lower_bound(path + "/");
    auto last = records_.lower_bound(path + "0");
    n += static_cast<std::size_t>(std::distance(first, last));
    records_.erase(first, last);
    return n;
}

const OwnerRecord* OwnerTable::find(const std::string& path) const {
    auto it = records_.find(path);
    return it == records_.end() ? nullptr : &it->second;
}

std::optional<LayerOwner> OwnerTable::owner_of(const std::string& path, const EntryIdentity& id) const {
    if (const OwnerRecord* r = find(path); r && r->matches(id)) return r->owner;
    if (id.type == S_IFDIR || id.nlink < 2 || records_.empty()) return std::nullopt;
    if (!by_ino_) {
        by_ino_.emplace();
        for (const auto& [p, r] : records_) by_ino_->emplace(r.ino, &p);
    }
    // The bytewise-first matching name decides, so the result does not depend on hash order.
    const std::string* best = nullptr;
    auto [first, last] = by_ino_->equal_range(id.ino);
    for (auto it = first; it != last; ++it)
        if (records_.at(*it->second).matches(id) && (!best || *it->second < *best)) best = it->second;
    if (!best) return std::nullopt;
    return records_.at(*best).owner;
}

std::string format_owner_record(const std::string& path, const OwnerRecord& r) {
    check_layer_path(path);
    return std::to_string(r.owner.uid) + " " + std::to_string(r.owner.gid) + " " + type_letter(r.type) + " " +
           std::to_string(r.ino) + " " + format_btime(r.btime) + " " + escape_path(path) + "\n";
}

std::string OwnerTable::serialize() const {
    std::string out = std::string(kHeader) + "\n";
    for (const auto& [path, record] : records_) {
        out += format_owner_record(path, record);
        if (out.size() > kMaxFileBytes)
            throw Error("owner table: more than " + std::to_string(kMaxFileBytes) + " bytes",
                        "split the step: one COPY of this many files with an owner the store cannot map");
    }
    return out;
}

OwnerTable OwnerTable::parse(std::string_view text, std::string_view what) {
    OwnerTable table;
    if (text.empty()) return table;
    if (text.size() > kMaxFileBytes)
        throw Error(std::string(what) + ": larger than " + std::to_string(kMaxFileBytes) + " bytes");
    std::size_t line_no = 0, pos = 0;
    auto fail = [&](const std::string& problem) -> Error {
        return Error(std::string(what) + ":" + std::to_string(line_no) + ": " + problem,
                     "the intended-owner table is written by aishell's build step; rebuild with --no-cache");
    };
    while (pos < text.size()) {
        ++line_no;
        std::size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos) throw fail("the last line has no newline (a cut-off table)");
        std::string_view line = text.substr(pos, nl - pos);
        pos = nl + 1;
        if (line_no == 1) {
            if (line != kHeader) throw fail("not an owner table (the first line must be '" + std::string(kHeader) + "')");
            continue;
        }
        std::string_view fields[5];
        for (auto& f : fields) {
            std::size_t sp = line.find(' ');
            if (sp == std::string_view::npos) throw fail("a record has six space-separated fields");
            f = line.substr(0, sp);
            line.remove_prefix(sp + 1);
        }
        OwnerRecord r;
        auto uid = parse_decimal(fields[0], kNoId - 1);
        auto gid = parse_decimal(fields[1], kNoId - 1);
        if (!uid || !gid) throw fail("uid and gid must be decimal ids below 4294967295");
        r.owner = {static_cast<std::uint32_t>(*uid), static_cast<std::uint32_t>(*gid)};
        auto type = letter_type(fields[2]);
        if (!type) throw fail("unknown file type '" + escape_path(fields[2]) + "'");
        r.type = *type;
        auto ino = parse_decimal(fields[3], std::numeric_limits<std::uint64_t>::max());
        if (!ino) throw fail("bad inode number");
        r.ino = *ino;
        if (!parse_btime(fields[4], &r.btime)) throw fail("bad birth time (want SEC.NNNNNNNNN or -)");
        std::string problem;
        auto path = unescape_path(line, &problem);
        if (!path) throw fail(problem);
        if (problem = path_problem(*path); !problem.empty()) throw fail(problem);
        if (!table.records_.count(*path) && table.records_.size() >= kMaxRecords)
            throw fail("more than " + std::to_string(kMaxRecords) + " records");
        table.records_[*path] = r;
    }
    return table;
}

std::optional<OwnerTable> read_owner_table(const std::filesystem::path& file) {
    // O_NONBLOCK: a FIFO put in its place must not block the reader (it is refused below).
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return std::nullopt;
        throw_errno("open owner table", file.string());
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno("stat owner table", file.string());
    if (!S_ISREG(st.st_mode)) throw Error("owner table " + file.string() + ": not a regular file");
    if (static_cast<std::uint64_t>(st.st_size) > OwnerTable::kMaxFileBytes)
        throw Error("owner table " + file.string() + ": larger than " + std::to_string(OwnerTable::kMaxFileBytes) +
                    " bytes");
    std::string text;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read owner table", file.string());
        if (n == 0) break;
        if (text.size() + static_cast<std::size_t>(n) > OwnerTable::kMaxFileBytes)
            throw Error("owner table " + file.string() + ": grew past " + std::to_string(OwnerTable::kMaxFileBytes) +
                        " bytes while read");
        text.append(buf, static_cast<std::size_t>(n));
    }
    return OwnerTable::parse(text, file.string());
}

std::filesystem::path layer_owner_table_path(const std::filesystem::path& layers_dir, const std::string& name) {
    return layers_dir / (name + ".owners");
}

namespace {

enum class Lookup { Absent, Hidden, Found };

bool is_opaque_dir(int fd) {
    char value[2] = {};
    for (const char* name : {"user.overlay.opaque", "trusted.overlay.opaque"})
        if (::fgetxattr(fd, name, value, sizeof value) == 1 && value[0] == 'y') return true;
    return false;
}

// Where path is in one layer tree, walked component by component without following symlinks:
// Found (*id set); Absent (lower layers may have it); Hidden (a whiteout, an opaque ancestor
// or a non-directory ancestor here hides it in the layers beneath).
Lookup lookup_in_layer(int root, const std::string& path, EntryIdentity* id) {
    UniqueFd cur(::openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cur) throw_errno("open layer tree");
    bool opaque_above = false;
    std::size_t start = 0;
    for (;;) {
        std::size_t slash = path.find('/', start);
        std::string comp = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
        auto found = entry_identity_at(cur.get(), comp);
        if (!found) return opaque_above ? Lookup::Hidden : Lookup::Absent;
        if (found->type == S_IFCHR) {
            struct stat st {};
            if (::fstatat(cur.get(), comp.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_rdev == 0)
                return Lookup::Hidden;  // a whiteout
        }
        if (slash == std::string::npos) {
            *id = *found;
            return Lookup::Found;
        }
        if (found->type != S_IFDIR) return Lookup::Hidden;
        UniqueFd next(::openat(cur.get(), comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next) throw_errno("open", path.substr(0, slash));
        opaque_above = opaque_above || is_opaque_dir(next.get());
        cur = std::move(next);
        start = slash + 1;
    }
}

}  // namespace

LayeredOwners::LayeredOwners(std::vector<Layer> layers_top_first) : layers_(std::move(layers_top_first)) {
    for (const auto& l : layers_) has_records_ = has_records_ || (l.table && !l.table->empty());
}

LayeredOwners LayeredOwners::load(const std::filesystem::path& layers_dir, const std::vector<std::string>& names) {
    std::vector<Layer> layers;
    for (const auto& name : names) {
        Layer l;
        l.dir = UniqueFd(::open((layers_dir / name).c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!l.dir) throw_errno("open layer tree", (layers_dir / name).string());
        l.table = read_owner_table(layer_owner_table_path(layers_dir, name));
        layers.push_back(std::move(l));
    }
    return LayeredOwners(std::move(layers));
}

std::optional<LayerOwner> LayeredOwners::owner_of(const std::string& path) const {
    if (!has_records_ || !path_problem(path).empty()) return std::nullopt;
    // Only the layers down to the lowest one with a record of path can matter.
    std::size_t last = layers_.size();
    for (std::size_t i = 0; i < layers_.size(); ++i)
        if (layers_[i].table && layers_[i].table->find(path)) last = i;
    if (last == layers_.size()) return std::nullopt;
    for (std::size_t i = 0; i <= last; ++i) {
        EntryIdentity id;
        switch (lookup_in_layer(layers_[i].dir.get(), path, &id)) {
            case Lookup::Absent: continue;
            case Lookup::Hidden: return std::nullopt;
            case Lookup::Found:
                if (!layers_[i].table) return std::nullopt;
                return layers_[i].table->owner_of(path, id);
        }
    }
    return std::nullopt;
}

bool LayeredOwners::shows(const std::string& path) const {
    if (!path_problem(path).empty()) return false;
    for (const auto& layer : layers_) {
        EntryIdentity id;
        switch (lookup_in_layer(layer.dir.get(), path, &id)) {
            case Lookup::Absent: continue;
            case Lookup::Hidden: return false;
            case Lookup::Found: return true;
        }
    }
    return false;
}

OwnerTable reidentify(const OwnerTable& table, int tree_fd) {
    OwnerTable out;
    for (const auto& [path, record] : table.records()) {
        auto id = entry_identity_at(tree_fd, path);
        if (id && id->type == record.type) out.set(path, OwnerRecord::for_entry(record.owner, *id));
    }
    return out;
}

void write_owner_table(int fd, const OwnerTable& table, std::string_view what) {
    write_all(fd, table.serialize(), what);
}

bool install_layer_tree(const std::filesystem::path& layers_dir, const std::string& name, const OwnerTable& owners,
                        const std::function<bool(const std::filesystem::path& target)>& rename_into_place) {
    const std::filesystem::path target = layers_dir / name, table = layer_owner_table_path(layers_dir, name);
    bool ours = false, raced = false;
    if (!std::filesystem::exists(target)) {
        if (!owners.empty()) write_file_atomic(table, owners.serialize(), 0600);
        ours = rename_into_place(target);
        raced = !ours;
    }
    // Another process made the same tree (from the same tar): the table must name its inodes.
    if (!ours && !owners.empty() && (raced || !std::filesystem::exists(table))) {
        UniqueFd tree(::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!tree) throw_errno("open", target.string());
        write_file_atomic(table, reidentify(owners, tree.get()).serialize(), 0600);
    }
    return ours;
}

}  // namespace aishell::oci
