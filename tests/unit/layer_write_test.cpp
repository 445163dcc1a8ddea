// Layer writing: a tree in overlayfs format becomes a reproducible OCI layer, and extracting
// that layer gives the tree back.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <clocale>
#include <map>
#include <optional>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "oci/layer_extract.hpp"
#include "oci/layer_write.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using namespace aishell;
using namespace aishell::oci;
using media_type::Compression;

namespace {

void write_text(const fs::path& p, const std::string& text, mode_t mode) {
    write_file_atomic(p, text);
    REQUIRE(::chmod(p.c_str(), mode) == 0);
}

void set_mtime(const fs::path& p, std::int64_t seconds) {
    timespec times[2] = {{seconds, 0}, {seconds, 0}};
    REQUIRE(::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0);
}

// The tree a RUN step might leave in its upper dir.
void make_upper(const fs::path& root) {
    fs::create_directories(root / "etc");
    write_text(root / "etc" / "hostname", "box\n", 0644);
    fs::create_directories(root / "usr" / "bin");
    write_text(root / "usr" / "bin" / "tool", "#!/bin/sh\necho hi\n", 04755);
    REQUIRE(::link((root / "usr" / "bin" / "tool").c_str(), (root / "usr" / "bin" / "tool-alias").c_str()) == 0);
    fs::create_symlink("usr/bin", root / "bin");
    fs::create_symlink("/etc/hostname", root / "etc" / "abs-link");
    // A deleted file: a 0/0 char device, as overlayfs writes it.
    INFO("mknod of a whiteout needs root or a user namespace (unit tests run as root in CI)");
    REQUIRE(::mknod((root / "etc" / "removed").c_str(), S_IFCHR | 0, makedev(0, 0)) == 0);
    // A replaced directory: opaque.
    fs::create_directories(root / "var" / "cache");
    write_text(root / "var" / "cache" / "new", "n", 0600);
    REQUIRE(::setxattr((root / "var" / "cache").c_str(), "user.overlay.opaque", "y", 1, 0) == 0);
    REQUIRE(::setxattr((root / "etc" / "hostname").c_str(), "user.note", "kept", 4, 0) == 0);
    REQUIRE(::mkfifo((root / "var" / "fifo").c_str(), 0640) == 0);
    REQUIRE(::chown((root / "etc" / "hostname").c_str(), 1000, 1001) == 0);
    for (const auto& e : fs::recursive_directory_iterator(root)) set_mtime(e.path(), 1700000000);
    set_mtime(root / "usr" / "bin" / "tool", 1800000000);
}

struct TarEntry {
    std::string type;
    unsigned mode = 0;
    std::int64_t uid = -1, gid = -1, mtime = 0, size = 0;
    std::string link;  // symlink or hardlink target
    std::map<std::string, std::string> xattrs;
};

std::vector<std::pair<std::string, TarEntry>> read_tar(const Store& store, const LayerWriteResult& layer) {
    std::string bytes = store.read_blob(layer.descriptor.digest, 1 << 30);
    archive* a = archive_read_new();
    archive_read_support_format_tar(a);
    archive_read_support_filter_all(a);
    REQUIRE(archive_read_open_memory(a, bytes.data(), bytes.size()) == ARCHIVE_OK);
    std::vector<std::pair<std::string, TarEntry>> out;
    archive_entry* e = nullptr;
    while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
        TarEntry t;
        if (archive_entry_hardlink(e)) t.type = "hardlink";
        else switch (archive_entry_filetype(e)) {
            case AE_IFDIR: t.type = "dir"; break;
            case AE_IFLNK: t.type = "symlink"; break;
            case AE_IFIFO: t.type = "fifo"; break;
            case AE_IFREG: t.type = "file"; break;
            default: t.type = "other";
        }
        t.mode = archive_entry_perm(e);
        t.uid = archive_entry_uid(e);
        t.gid = archive_entry_gid(e);
        t.mtime = archive_entry_mtime(e);
        t.size = archive_entry_size(e);
        if (archive_entry_symlink(e)) t.link = archive_entry_symlink(e);
        if (archive_entry_hardlink(e)) t.link = archive_entry_hardlink(e);
        // No user or group names: ids only, as the image spec asks.
        CHECK(std::string(archive_entry_uname(e) ? archive_entry_uname(e) : "").empty());
        CHECK(std::string(archive_entry_gname(e) ? archive_entry_gname(e) : "").empty());
        archive_entry_xattr_reset(e);
        const char* name;
        const void* value;
        size_t size;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
            t.xattrs[name] = std::string(static_cast<const char*>(value), size);
        out.emplace_back(archive_entry_pathname(e), t);
    }
    archive_read_free(a);
    return out;
}

const TarEntry& find(const std::vector<std::pair<std::string, TarEntry>>& entries, const std::string& name) {
    for (const auto& [n, e] : entries)
        if (n == name) return e;
    FAIL("no entry " << name);
    throw;
}

}  // namespace

TEST_CASE("layer write: overlay whiteouts and opaque dirs become OCI markers, in name order", "[layer_write]") {
    TempDir store_dir, upper;
    Store store = Store::open(store_dir.path / "store");
    make_upper(upper.path);
    auto layer = write_layer(store, upper.fd().get());
    REQUIRE(layer);
    CHECK(layer->descriptor.media_type == media_type::kOciLayerGzip);
    CHECK(store.has_blob(layer->descriptor.digest));
    CHECK(layer->descriptor.size == static_cast<std::int64_t>(*store.blob_size(layer->descriptor.digest)));

    auto entries = read_tar(store, *layer);
    std::vector<std::string> names;
    for (const auto& [n, e] : entries) names.push_back(n);
    CHECK(names == std::vector<std::string>{
                       "bin", "etc/", "etc/abs-link", "etc/hostname", "etc/.wh.removed", "usr/", "usr/bin/",
                       "usr/bin/tool", "usr/bin/tool-alias", "var/", "var/cache/", "var/cache/.wh..wh..opq",
                       "var/cache/new", "var/fifo"});
    CHECK(layer->entries == names.size());
    CHECK(find(entries, "bin").type == "symlink");
    CHECK(find(entries, "bin").link == "usr/bin");
    CHECK(find(entries, "etc/abs-link").link == "/etc/hostname");
    CHECK(find(entries, "etc/.wh.removed").type == "file");
    CHECK(find(entries, "etc/.wh.removed").size == 0);
    CHECK(find(entries, "usr/bin/tool").mode == 04755);
    CHECK(find(entries, "usr/bin/tool").size == 18);
    CHECK(find(entries, "usr/bin/tool-alias").type == "hardlink");
    CHECK(find(entries, "usr/bin/tool-alias").link == "usr/bin/tool");
    CHECK(find(entries, "etc/hostname").uid == 1000);
    CHECK(find(entries, "etc/hostname").gid == 1001);
    CHECK(find(entries, "etc/hostname").xattrs.at("user.note") == "kept");
    CHECK(find(entries, "var/cache/").xattrs.count("user.overlay.opaque") == 0);
    CHECK(find(entries, "var/fifo").type == "fifo");
    CHECK(find(entries, "var/fifo").mode == 0640);
    CHECK(find(entries, "etc/").mtime == 1700000000);
}

TEST_CASE("layer write: the same tree gives the same digests, SOURCE_DATE_EPOCH clamps mtimes", "[layer_write]") {
    TempDir store_dir, upper;
    Store store = Store::open(store_dir.path / "store");
    make_upper(upper.path);
    auto a = write_layer(store, upper.fd().get());
    auto b = write_layer(store, upper.fd().get());
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->descriptor.digest == b->descriptor.digest);
    CHECK(a->diff_id == b->diff_id);

    LayerWriteOptions clamp;
    clamp.clamp_mtime = 1750000000;
    auto c = write_layer(store, upper.fd().get(), clamp);
    REQUIRE(c);
    CHECK(c->diff_id != a->diff_id);
    auto entries = read_tar(store, *c);
    CHECK(find(entries, "usr/bin/tool").mtime == 1750000000);  // later than the epoch: clamped
    CHECK(find(entries, "etc/hostname").mtime == 1700000000);  // earlier: kept
}

TEST_CASE("layer write: owners are mapped back to container ids", "[layer_write]") {
    TempDir store_dir, upper;
    Store store = Store::open(store_dir.path / "store");
    make_upper(upper.path);
    LayerWriteOptions options;
    options.map_owner = [](const std::string&, LayerOwner o) {
        return LayerOwner{o.uid == 1000 ? 0u : o.uid + 100000, o.gid == 1001 ? 0u : o.gid + 100000};
    };
    auto layer = write_layer(store, upper.fd().get(), options);
    REQUIRE(layer);
    auto entries = read_tar(store, *layer);
    CHECK(find(entries, "etc/hostname").uid == 0);
    CHECK(find(entries, "etc/hostname").gid == 0);
    CHECK(find(entries, "usr/bin/tool").uid == 100000);
}

TEST_CASE("layer write: an empty tree gives no layer and adds no blob", "[layer_write]") {
    TempDir store_dir, upper;
    Store store = Store::open(store_dir.path / "store");
    CHECK_FALSE(write_layer(store, upper.fd().get()));
    CHECK(fs::is_empty(store.root() / "oci" / "blobs" / "sha256"));
}

TEST_CASE("layer write: gzip, zstd and plain layers share a diff_id and extract to the same tree", "[layer_write]") {
    TempDir store_dir, upper;
    Store store = Store::open(store_dir.path / "store");
    make_upper(upper.path);
    std::optional<Digest> diff_id;
    for (Compression c : {Compression::None, Compression::Gzip, Compression::Zstd}) {
        LayerWriteOptions options;
        options.compression = c;
        auto layer = write_layer(store, upper.fd().get(), options);
        REQUIRE(layer);
        CHECK(layer->descriptor.media_type == layer_media_type(c));
        if (!diff_id) diff_id = layer->diff_id;
        CHECK(layer->diff_id == *diff_id);
        if (c == Compression::None) CHECK(layer->descriptor.digest == layer->diff_id);

        TempDir out;
        UniqueFd blob(::open(store.blob_path(layer->descriptor.digest).c_str(), O_RDONLY | O_CLOEXEC));
        ExtractOptions extract;
        extract.owners = ExtractOptions::Owners::Preserve;
        ExtractStats stats = extract_layer(blob.get(), c, out.fd().get(), extract);
        CHECK(stats.diff_id == *diff_id);
        CHECK(stats.whiteouts == 1);
        CHECK(stats.opaque_dirs == 1);
        CHECK(stats.hardlinks == 1);
        struct stat a {}, b {};
        REQUIRE(::lstat((out.path / "usr/bin/tool").c_str(), &a) == 0);
        REQUIRE(::lstat((out.path / "usr/bin/tool-alias").c_str(), &b) == 0);
        CHECK(a.st_ino == b.st_ino);
        CHECK((a.st_mode & 07777) == 04755);
        REQUIRE(::lstat((out.path / "etc/removed").c_str(), &a) == 0);
        CHECK(S_ISCHR(a.st_mode));
        CHECK(a.st_rdev == makedev(0, 0));
        char value[8] = {};
        CHECK(::getxattr((out.path / "var/cache").c_str(), "user.overlay.opaque", value, sizeof value) == 1);
        CHECK(fs::read_symlink(out.path / "etc/abs-link") == "/etc/hostname");
        CHECK(read_file(out.path / "etc/hostname") == "box\n");
    }
}

namespace {

OwnerRecord record_of(const TempDir& tree, const std::string& path, LayerOwner owner) {
    auto fd = tree.fd();
    auto id = entry_identity_at(fd.get(), path);
    REQUIRE(id);
    return OwnerRecord::for_entry(owner, *id);
}

}  // namespace

TEST_CASE("layer write: an intended-owner table sets the owners of the entries it recorded", "[layer_write]") {
    TempDir store_dir, upper;
    Store store = Store::open(store_dir.path / "store");
    make_upper(upper.path);
    fs::create_directories(upper.path / "opt" / "app");
    write_text(upper.path / "opt" / "app" / "replaced", "old", 0644);

    OwnerTable table;
    // A symlink (no user xattrs there), a directory, a file mapped by map_owner as well.
    table.set("bin", record_of(upper, "bin", {1234, 2345}));
    table.set("opt/app", record_of(upper, "opt/app", {1234, 2345}));
    table.set("etc/hostname", record_of(upper, "etc/hostname", {7, 8}));
    // A hardlink recorded under its second name only: both names get the owner.
    table.set("usr/bin/tool-alias", record_of(upper, "usr/bin/tool-alias", {4000, 4001}));
    // A file replaced after its record (a new inode at the same path) keeps its own owner; a
    // removed one (now a whiteout) and one never in the tree are ignored.
    // The new file is made before the old one goes, so it cannot reuse the old inode number
    // (a reuse within one timestamp tick is indistinguishable: see owner_table.hpp).
    table.set("opt/app/replaced", record_of(upper, "opt/app/replaced", {5000, 5000}));
    write_text(upper.path / "opt" / "app" / "replaced.new", "new", 0644);
    REQUIRE(::rename((upper.path / "opt" / "app" / "replaced.new").c_str(),
                     (upper.path / "opt" / "app" / "replaced").c_str()) == 0);
    table.set("var/fifo", record_of(upper, "var/fifo", {6000, 6000}));
    REQUIRE(::unlink((upper.path / "var" / "fifo").c_str()) == 0);
    REQUIRE(::mknod((upper.path / "var" / "fifo").c_str(), S_IFCHR | 0, makedev(0, 0)) == 0);
    table.set("not/there", OwnerRecord{{9, 9}, S_IFREG, 1, std::nullopt});
    // The table is what the file says: written and read back.
    write_file_atomic(store_dir.path / "owners", table.serialize());
    auto read_back = read_owner_table(store_dir.path / "owners");
    REQUIRE(read_back);

    LayerWriteOptions options;
    options.map_owner = [](const std::string&, LayerOwner o) { return LayerOwner{o.uid + 1, o.gid + 1}; };
    options.owners = &*read_back;
    auto layer = write_layer(store, upper.fd().get(), options);
    REQUIRE(layer);
    auto entries = read_tar(store, *layer);
    auto owner = [&](const std::string& name) {
        const TarEntry& e = find(entries, name);
        return std::pair{e.uid, e.gid};
    };
    CHECK(owner("bin") == std::pair<std::int64_t, std::int64_t>{1234, 2345});
    CHECK(find(entries, "bin").type == "symlink");
    CHECK(owner("opt/app/") == std::pair<std::int64_t, std::int64_t>{1234, 2345});
    CHECK(owner("etc/hostname") == std::pair<std::int64_t, std::int64_t>{7, 8});  // the table over map_owner
    CHECK(owner("usr/bin/tool") == std::pair<std::int64_t, std::int64_t>{4000, 4001});
    CHECK(owner("usr/bin/tool-alias") == std::pair<std::int64_t, std::int64_t>{4000, 4001});
    CHECK(find(entries, "usr/bin/tool-alias").type == "hardlink");
    CHECK(owner("opt/app/replaced") == std::pair<std::int64_t, std::int64_t>{1, 1});  // map_owner only
    CHECK(owner("opt/") == std::pair<std::int64_t, std::int64_t>{1, 1});
    CHECK(owner("var/.wh.fifo") == std::pair<std::int64_t, std::int64_t>{0, 0});
    CHECK(layer->owners_from_table == 5);  // bin, opt/app, etc/hostname, tool, tool-alias

    // Without the table: the owners on disk, and another digest.
    LayerWriteOptions plain;
    plain.map_owner = options.map_owner;
    auto without = write_layer(store, upper.fd().get(), plain);
    REQUIRE(without);
    CHECK(without->diff_id != layer->diff_id);
    CHECK(without->owners_from_table == 0);
    // An empty table changes nothing.
    OwnerTable empty;
    plain.owners = &empty;
    CHECK(write_layer(store, upper.fd().get(), plain)->diff_id == without->diff_id);

    // Extracted again (owners preserved), the tree has the intended owners.
    TempDir out;
    UniqueFd blob(::open(store.blob_path(layer->descriptor.digest).c_str(), O_RDONLY | O_CLOEXEC));
    ExtractOptions extract;
    extract.owners = ExtractOptions::Owners::Preserve;
    extract_layer(blob.get(), Compression::Gzip, out.fd().get(), extract);
    struct stat st {};
    REQUIRE(::lstat((out.path / "bin").c_str(), &st) == 0);
    CHECK((st.st_uid == 1234 && st.st_gid == 2345));
    REQUIRE(::lstat((out.path / "usr/bin/tool-alias").c_str(), &st) == 0);
    CHECK((st.st_uid == 4000 && st.st_gid == 4001));
}

TEST_CASE("layer write: entries copied up from the lower layers keep the owners those recorded, the step's own get new_entry_owner", "[layer_write]") {
    TempDir store_dir, layers, upper;
    Store store = Store::open(store_dir.path / "store");
    // The lower layer tree and its table, as a COPY --chown step in single mode left them.
    const fs::path lower = layers.path / "lower";
    fs::create_directories(lower / "opt" / "app");
    fs::create_directories(lower / "home" / "app");
    fs::create_directories(lower / "var" / "lib");
    write_text(lower / "home" / "app" / ".profile", "p", 0644);
    write_text(lower / "home" / "app" / "notes", "n", 0644);
    OwnerTable lower_table;
    for (const char* p : {"opt", "opt/app", "home/app", "home/app/.profile", "home/app/notes", "var/lib"}) {
        UniqueFd fd(::open(lower.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        lower_table.set(p, OwnerRecord::for_entry({1234, 2345}, *entry_identity_at(fd.get(), p)));
    }
    write_file_atomic(layer_owner_table_path(layers.path, "lower"), lower_table.serialize());

    // The step's upper dir: /opt and /opt/app merged (a file made inside), .profile copied up,
    // notes deleted and made again (no origin), /var/lib replaced (opaque), /home/app
    // re-owned by this step (its own table).
    fs::create_directories(upper.path / "opt" / "app");
    write_text(upper.path / "opt" / "app" / "new", "n", 0644);
    fs::create_directories(upper.path / "home" / "app");
    write_text(upper.path / "home" / "app" / ".profile", "p2", 0644);
    REQUIRE(::setxattr((upper.path / "home/app/.profile").c_str(), "user.overlay.origin", "", 0, 0) == 0);
    write_text(upper.path / "home" / "app" / "notes", "new notes", 0644);
    fs::create_directories(upper.path / "var" / "lib");
    REQUIRE(::setxattr((upper.path / "var/lib").c_str(), "user.overlay.opaque", "y", 1, 0) == 0);
    fs::create_directories(upper.path / "srv" / "data");  // new dirs, not in the lower layer
    OwnerTable own;
    own.set("home/app", record_of(upper, "home/app", {5, 5}));

    LayerWriteOptions options;
    auto lowers = LayeredOwners::load(layers.path, {"lower"});
    options.lower_owners = &lowers;
    options.owners = &own;
    std::optional<LayerOwner> user;
    SECTION("the step's own entries keep their on-disk owners") {}
    SECTION("a RUN under an emulated USER: the step's own entries are USER's") { user = LayerOwner{1000, 1001}; }
    options.new_entry_owner = user;
    auto layer = write_layer(store, upper.fd().get(), options);
    REQUIRE(layer);
    auto entries = read_tar(store, *layer);
    auto owner = [&](const std::string& name) {
        const TarEntry& e = find(entries, name);
        return std::pair{e.uid, e.gid};
    };
    using Ids = std::pair<std::int64_t, std::int64_t>;
    const Ids made = user ? Ids{1000, 1001} : Ids{0, 0};
    CHECK(owner("opt/") == Ids{1234, 2345});
    CHECK(owner("opt/app/") == Ids{1234, 2345});
    CHECK(owner("opt/app/new") == made);
    CHECK(owner("home/app/") == Ids{5, 5});
    CHECK(owner("home/app/.profile") == Ids{1234, 2345});
    CHECK(owner("home/app/notes") == made);  // made again by the step
    CHECK(owner("var/lib/") == made);        // replaced by the step (opaque)
    CHECK(owner("srv/") == made);
    CHECK(owner("srv/data/") == made);
    CHECK(owner("home/") == Ids{0, 0});  // merged, but the lower recorded nothing for it
    // No overlay xattr reaches the layer.
    CHECK(find(entries, "home/app/.profile").xattrs.empty());

    // The new tree's own table: what decided, with the upper's inodes.
    std::vector<std::string> decided;
    for (const auto& [p, r] : layer->owners.records()) decided.push_back(p);
    if (user)
        CHECK(decided == std::vector<std::string>{"home/app", "home/app/.profile", "home/app/notes", "opt", "opt/app",
                                                  "opt/app/new", "srv", "srv/data", "var/lib"});
    else
        CHECK(decided == std::vector<std::string>{"home/app", "home/app/.profile", "opt", "opt/app"});
    UniqueFd ufd = upper.fd();
    CHECK(layer->owners.owner_of("opt/app", *entry_identity_at(ufd.get(), "opt/app")) == LayerOwner{1234, 2345});
}

namespace {

// The pax records of one tar stream: {entry index, "key=value"} in order, raw bytes.
std::vector<std::pair<int, std::string>> pax_records(const std::string& tar) {
    std::vector<std::pair<int, std::string>> out;
    int entry = 0;
    for (std::size_t at = 0; at + 512 <= tar.size();) {
        const char* h = tar.data() + at;
        if (h[0] == '\0') break;
        std::uint64_t size = std::stoull(std::string(h + 124, 12), nullptr, 8);
        std::size_t data = at + 512;
        if (h[156] == 'x') {
            for (std::size_t p = data; p < data + size;) {
                std::size_t space = tar.find(' ', p);
                std::size_t length = std::stoul(tar.substr(p, space - p));
                out.emplace_back(entry, tar.substr(space + 1, p + length - space - 2));
                p += length;
            }
        } else {
            ++entry;
        }
        at = data + (size + 511) / 512 * 512;
    }
    return out;
}

// Names that are UTF-8 (precomposed, decomposed, CJK) and names that are not (a lone Latin-1
// byte, an overlong sequence, a UTF-16 surrogate), as a RUN step may leave them.
const std::string kCafe = "caf\xc3\xa9";
const std::string kDecomposed = "cafe\xcc\x81";
const std::string kJapanese = "\xe6\x97\xa5\xe6\x9c\xac.txt";
const std::string kLatin1 = "bad\xe9";
const std::string kOverlong = "ov\xc0\xaf";
const std::string kSurrogate = "sur\xed\xa0\x80";

void make_named_upper(const fs::path& root) {
    for (const auto& name : {kCafe, kDecomposed, kJapanese, kOverlong, kSurrogate}) write_text(root / name, name, 0644);
    fs::create_directories(root / "d");
    write_text(root / "d" / kLatin1, "data", 0644);                                      // the hardlink target
    REQUIRE(::link((root / "d" / kLatin1).c_str(), (root / "d" / "z").c_str()) == 0);  // after it in name order
    fs::create_symlink("F\xc5\x91.pem", root / "lnk");
    fs::create_symlink("x\xe9", root / "lnk2");
    REQUIRE(::setxattr((root / kCafe).c_str(), "user.v", "v\xe9", 2, 0) == 0);
    for (const auto& e : fs::recursive_directory_iterator(root)) set_mtime(e.path(), 1700000000);
}

}  // namespace

TEST_CASE("layer write: names, link targets and xattrs are bytes, written as Go's archive/tar writes them", "[layer_write]") {
    TempDir store_dir, upper;
    Store store = Store::open(store_dir.path / "store");
    make_named_upper(upper.path);
    LayerWriteOptions options;
    options.compression = Compression::None;

    // The process locale does not matter (aishell never calls setlocale, but a library might).
    std::optional<Digest> digest;
    for (const char* locale : {"C", "C.UTF-8"}) {
        INFO(locale);
        REQUIRE(::setlocale(LC_ALL, locale));
        auto layer = write_layer(store, upper.fd().get(), options);
        ::setlocale(LC_ALL, "C");
        REQUIRE(layer);
        if (!digest) digest = layer->descriptor.digest;
        CHECK(layer->descriptor.digest == *digest);
    }
    const std::string tar = store.read_blob(*digest, 1 << 20);

    // UTF-8 names go into plain pax path/linkpath records, byte for byte (no normalization);
    // the others as raw bytes with hdrcharset=BINARY in their own entry's record.
    std::map<int, std::vector<std::string>> records;
    for (auto& [entry, record] : pax_records(tar)) records[entry].push_back(record);
    std::vector<std::vector<std::string>> got;
    for (auto& [entry, r] : records) got.push_back(r);
    // Entry order (bytewise): bad... is under d/, so: "cafe\xcc\x81" < "caf\xc3\xa9" < d/ < d/bad\xe9 < d/z
    // < lnk < lnk2 < ov\xc0\xaf < sur\xed\xa0\x80 < \xe6\x97\xa5...
    CHECK(got == std::vector<std::vector<std::string>>{
                     {"path=" + kDecomposed},
                     {"path=" + kCafe, "LIBARCHIVE.xattr.user.v=duk", "SCHILY.xattr.user.v=v\xe9"},
                     {"hdrcharset=BINARY", "path=d/" + kLatin1},
                     {"hdrcharset=BINARY", "linkpath=d/" + kLatin1},
                     {"linkpath=F\xc5\x91.pem"},
                     {"hdrcharset=BINARY", "linkpath=x\xe9"},
                     {"hdrcharset=BINARY", "path=" + kOverlong},
                     {"hdrcharset=BINARY", "path=" + kSurrogate},
                     {"path=" + kJapanese}});

    // Extracted again (in either locale), every byte comes back.
    for (const char* locale : {"C", "C.UTF-8"}) {
        INFO(locale);
        TempDir out;
        UniqueFd blob(::open(store.blob_path(*digest).c_str(), O_RDONLY | O_CLOEXEC));
        ExtractOptions extract;
        extract.owners = ExtractOptions::Owners::Preserve;
        REQUIRE(::setlocale(LC_ALL, locale));
        ExtractStats stats = extract_layer(blob.get(), Compression::None, out.fd().get(), extract);
        ::setlocale(LC_ALL, "C");
        CHECK(stats.hardlinks == 1);
        for (const auto& name : {kCafe, kDecomposed, kJapanese, kOverlong, kSurrogate})
            CHECK(read_file(out.path / name) == name);
        struct stat a {}, b {};
        REQUIRE(::lstat((out.path / "d" / kLatin1).c_str(), &a) == 0);
        REQUIRE(::lstat((out.path / "d" / "z").c_str(), &b) == 0);
        CHECK(a.st_ino == b.st_ino);
        CHECK(fs::read_symlink(out.path / "lnk").string() == "F\xc5\x91.pem");
        CHECK(fs::read_symlink(out.path / "lnk2").string() == "x\xe9");
        char value[8] = {};
        CHECK(::getxattr((out.path / kCafe).c_str(), "user.v", value, sizeof value) == 2);
        CHECK(std::string(value, 2) == "v\xe9");
    }
}
