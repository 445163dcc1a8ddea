// The intended-owner side table (oci/owner_table.hpp): its text format both ways, strict and
// bounded parsing with errors naming the line, path rules, and the identity rules that decide
// which entry a record applies to (replaced entries, hardlinks, symlinks).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "oci/owner_table.hpp"
#include "temp_dir.hpp"
#include "skip.hpp"

namespace fs = std::filesystem;
using namespace aishell;
using namespace aishell::oci;

namespace {

OwnerRecord rec(std::uint32_t uid, std::uint32_t gid, mode_t type, std::uint64_t ino,
                std::optional<BirthTime> btime = std::nullopt) {
    return OwnerRecord{{uid, gid}, type, ino, btime};
}

EntryIdentity ident(mode_t type, std::uint64_t ino, std::uint32_t nlink = 1,
                    std::optional<BirthTime> btime = std::nullopt) {
    return EntryIdentity{type, ino, nlink, btime};
}

std::string parse_error(std::string_view text) {
    try {
        OwnerTable::parse(text, "owners");
    } catch (const Error& e) {
        return e.what();
    }
    return "(parsed)";
}

const std::string kHead = std::string(OwnerTable::kHeader) + "\n";

}  // namespace

TEST_CASE("an owner table is written as a header and one escaped line per path", "[owner_table]") {
    OwnerTable t;
    t.set("opt/app/bin/app", rec(1234, 2345, S_IFREG, 77, BirthTime{1700000000, 5}));
    t.set("opt/app", rec(1234, 2345, S_IFDIR, 76));
    t.set("odd name/100%\n\t\x7f", rec(1, 2, S_IFLNK, 78, BirthTime{-3, 999999999}));
    t.set("caf\xc3\xa9", rec(0, 4294967294u, S_IFIFO, 18446744073709551615ull));
    CHECK(t.serialize() == kHead +
                               "0 4294967294 p 18446744073709551615 - caf\xc3\xa9\n"
                               "1 2 l 78 -3.999999999 odd%20name/100%25%0A%09%7F\n"
                               "1234 2345 d 76 - opt/app\n"
                               "1234 2345 f 77 1700000000.000000005 opt/app/bin/app\n");
    OwnerTable back = OwnerTable::parse(t.serialize(), "owners");
    CHECK(back.records() == t.records());
    CHECK(OwnerTable::parse("", "owners").empty());  // an empty file is an empty table
}

TEST_CASE("a path repeated in the table takes its last line, as an append-only log", "[owner_table]") {
    auto t = OwnerTable::parse(kHead + "1 1 f 5 - a\n2 2 d 6 - b\n3 3 f 7 - a\n", "owners");
    REQUIRE(t.size() == 2);
    CHECK(*t.find("a") == rec(3, 3, S_IFREG, 7));
    CHECK(t.serialize() + format_owner_record("c", rec(4, 4, S_IFSOCK, 8)) ==
          kHead + "3 3 f 7 - a\n2 2 d 6 - b\n4 4 s 8 - c\n");
}

TEST_CASE("malformed owner tables are refused naming the line", "[owner_table]") {
    CHECK(parse_error("aishell-owner-table 2\n") ==
          "owners:1: not an owner table (the first line must be 'aishell-owner-table 1')");
    CHECK(parse_error(kHead + "1 1 f 5 - a") == "owners:2: the last line has no newline (a cut-off table)");
    CHECK(parse_error(kHead + "1 1 f 5 a\n") == "owners:2: a record has six space-separated fields");
    CHECK(parse_error(kHead + "0 0 f 1 - ok\n-1 0 f 5 - a\n") ==
          "owners:3: uid and gid must be decimal ids below 4294967295");
    for (const char* id : {"4294967295", "01", "+1", "", "1x", "99999999999999999999999"})
        CHECK(parse_error(kHead + std::string(id) + " 0 f 5 - a\n") ==
              "owners:2: uid and gid must be decimal ids below 4294967295");
    CHECK(parse_error(kHead + "0 4294967295 f 5 - a\n") == "owners:2: uid and gid must be decimal ids below 4294967295");
    CHECK(parse_error(kHead + "0 0 x 5 - a\n") == "owners:2: unknown file type 'x'");
    CHECK(parse_error(kHead + "0 0 ff 5 - a\n") == "owners:2: unknown file type 'ff'");
    CHECK(parse_error(kHead + "0 0 f 18446744073709551616 - a\n") == "owners:2: bad inode number");
    for (const char* t : {"1.5", "1.0000000001", "x.000000000", "-0.000000000", "1.00000000a", "."})
        CHECK(parse_error(kHead + "0 0 f 5 " + t + " a\n") == "owners:2: bad birth time (want SEC.NNNNNNNNN or -)");
    CHECK(parse_error(kHead + "0 0 f 5 - /etc/passwd\n") == "owners:2: absolute path");
    CHECK(parse_error(kHead + "0 0 f 5 - a/\n") == "owners:2: trailing '/'");
    CHECK(parse_error(kHead + "0 0 f 5 - a//b\n") == "owners:2: empty path component");
    CHECK(parse_error(kHead + "0 0 f 5 - a/../b\n") == "owners:2: '.' or '..' component");
    CHECK(parse_error(kHead + "0 0 f 5 - ./a\n") == "owners:2: '.' or '..' component");
    CHECK(parse_error(kHead + "0 0 f 5 - \n") == "owners:2: empty path (the layer root is no entry)");
    CHECK(parse_error(kHead + "0 0 f 5 - a b\n") == "owners:2: unescaped control byte, space or '%' in the path");
    CHECK(parse_error(kHead + "0 0 f 5 - a\tb\n") == "owners:2: unescaped control byte, space or '%' in the path");
    CHECK(parse_error(kHead + "0 0 f 5 - a%2\n") == "owners:2: bad %XX escape in the path");
    CHECK(parse_error(kHead + "0 0 f 5 - a%0a\n") == "owners:2: bad %XX escape in the path");
    CHECK(parse_error(kHead + "0 0 f 5 - %41\n") == "owners:2: needless %XX escape in the path");
    CHECK(parse_error(kHead + "0 0 f 5 - a%00b\n") == "owners:2: NUL byte in the path");
    CHECK(parse_error(kHead + "0 0 f 5 - " + std::string(256, 'n') + "\n") ==
          "owners:2: path component longer than 255 bytes");
    std::string long_path;
    while (long_path.size() <= OwnerTable::kMaxPathBytes) long_path += std::string(100, 'd') + "/";
    long_path += "f";
    CHECK(parse_error(kHead + "0 0 f 5 - " + long_path + "\n") == "owners:2: path longer than 4095 bytes");
    // The hint says what to do about it.
    try {
        OwnerTable::parse("junk\n", "owners");
        FAIL("parsed");
    } catch (const Error& e) {
        CHECK(e.hint().find("--no-cache") != std::string::npos);
    }
}

TEST_CASE("an owner table holds at most a million records", "[owner_table]") {
    std::string text = kHead;
    text.reserve(30u * (OwnerTable::kMaxRecords + 1));
    for (std::size_t i = 0; i < OwnerTable::kMaxRecords; ++i) text += "0 0 f 1 - " + std::to_string(i) + "\n";
    // Repeating a path adds no record.
    auto full = OwnerTable::parse(text + "1 1 f 1 - 0\n", "owners");
    CHECK(full.size() == OwnerTable::kMaxRecords);
    CHECK(parse_error(text + "0 0 f 1 - one-more\n") ==
          "owners:" + std::to_string(OwnerTable::kMaxRecords + 2) + ": more than 1000000 records");
    CHECK_THROWS_WITH(full.set("one-more", rec(1, 1, S_IFREG, 2)), "owner table: more than 1000000 records");
    full.set("0", rec(2, 2, S_IFREG, 3));  // replacing stays within the bound
    CHECK(full.find("0")->owner == LayerOwner{2, 2});
}

TEST_CASE("records are set only for cleaned layer paths and real owners", "[owner_table]") {
    OwnerTable t;
    CHECK_THROWS_WITH(t.set("/abs", rec(1, 1, S_IFREG, 1)), "owner table: absolute path: '/abs'");
    CHECK_THROWS_WITH(t.set("", rec(1, 1, S_IFREG, 1)), "owner table: empty path (the layer root is no entry): ''");
    CHECK_THROWS_WITH(t.set("a/./b", rec(1, 1, S_IFREG, 1)), "owner table: '.' or '..' component: 'a/./b'");
    CHECK_THROWS_WITH(t.set("a b", rec(4294967295u, 1, S_IFREG, 1)),
                      "owner table: a%20b: id 4294967295 is not an owner");
    CHECK_THROWS_WITH(t.set("a", rec(1, 1, 0, 1)), "owner table: unknown file type 0");
    CHECK(t.empty());
}

TEST_CASE("erasing a tree leaves siblings that share its prefix", "[owner_table]") {
    OwnerTable t;
    for (const char* p : {"a", "a/b", "a/b/c", "a/b/c/d", "a/b0", "a/b.txt", "a/bc", "a/b-", "b"})
        t.set(p, rec(1, 1, S_IFREG, 1));
    CHECK(t.erase_tree("a/b") == 3);
    std::vector<std::string> left;
    for (const auto& [p, r] : t.records()) left.push_back(p);
    CHECK(left == std::vector<std::string>{"a", "a/b-", "a/b.txt", "a/b0", "a/bc", "b"});
    CHECK(t.erase("a"));
    CHECK_FALSE(t.erase("a"));
    CHECK(t.erase_tree("nothing") == 0);
}

TEST_CASE("a record applies only to the inode it was made for", "[owner_table]") {
    OwnerTable t;
    const BirthTime born{1700000000, 42};
    t.set("file", rec(1000, 1000, S_IFREG, 10, born));
    t.set("link", rec(1001, 1001, S_IFLNK, 11));
    t.set("dir", rec(1002, 1002, S_IFDIR, 12, born));

    CHECK(t.owner_of("file", ident(S_IFREG, 10, 1, born)) == LayerOwner{1000, 1000});
    // Replaced: another inode, or the same number reused by a newer inode, or another type.
    CHECK_FALSE(t.owner_of("file", ident(S_IFREG, 99, 1, born)));
    CHECK_FALSE(t.owner_of("file", ident(S_IFREG, 10, 1, BirthTime{1700000001, 0})));
    CHECK_FALSE(t.owner_of("file", ident(S_IFREG, 10, 1, std::nullopt)));
    CHECK_FALSE(t.owner_of("file", ident(S_IFDIR, 10, 1, born)));
    // A record without a birth time (a filesystem without one) matches on type and inode.
    CHECK(t.owner_of("link", ident(S_IFLNK, 11, 1, born)) == LayerOwner{1001, 1001});
    CHECK_FALSE(t.owner_of("link", ident(S_IFREG, 11, 1, born)));
    CHECK(t.owner_of("dir", ident(S_IFDIR, 12, 2, born)) == LayerOwner{1002, 1002});
    // Another path is not the recorded one, even with the same identity, unless it is a
    // hardlink (several links, not a directory).
    CHECK_FALSE(t.owner_of("elsewhere", ident(S_IFREG, 10, 1, born)));
    CHECK(t.owner_of("elsewhere", ident(S_IFREG, 10, 2, born)) == LayerOwner{1000, 1000});
    CHECK_FALSE(t.owner_of("elsewhere", ident(S_IFDIR, 12, 2, born)));
}

TEST_CASE("hardlinks take the record of any of their names, the bytewise-first deciding", "[owner_table]") {
    OwnerTable t;
    t.set("z-link", rec(7, 7, S_IFREG, 50));
    t.set("m-link", rec(8, 8, S_IFREG, 50));
    t.set("stale", rec(9, 9, S_IFREG, 51));
    CHECK(t.owner_of("a-link", ident(S_IFREG, 50, 3)) == LayerOwner{8, 8});
    // The path's own matching record first.
    CHECK(t.owner_of("z-link", ident(S_IFREG, 50, 3)) == LayerOwner{7, 7});
    // A stale record at the path (another inode now) falls back to the inode's other names.
    t.set("a-link", rec(6, 6, S_IFREG, 49));
    CHECK(t.owner_of("a-link", ident(S_IFREG, 50, 3)) == LayerOwner{8, 8});
    // The index follows changes of the table.
    t.erase("m-link");
    CHECK(t.owner_of("a-link", ident(S_IFREG, 50, 3)) == LayerOwner{7, 7});
    t.set("stale", rec(5, 5, S_IFREG, 50));
    CHECK(t.owner_of("a-link", ident(S_IFREG, 50, 3)) == LayerOwner{5, 5});
}

TEST_CASE("entry identities come from the tree without following symlinks", "[owner_table]") {
    TempDir dir;
    auto fd = dir.fd();
    write_file_atomic(dir.path / "f", "x");
    fs::create_symlink("f", dir.path / "l");
    fs::create_directories(dir.path / "d");
    REQUIRE(::link((dir.path / "f").c_str(), (dir.path / "h").c_str()) == 0);

    auto f = entry_identity_at(fd.get(), "f");
    auto l = entry_identity_at(fd.get(), "l");
    auto h = entry_identity_at(fd.get(), "h");
    auto d = entry_identity_at(fd.get(), "d");
    REQUIRE((f && l && h && d));
    struct stat st {};
    REQUIRE(::lstat((dir.path / "l").c_str(), &st) == 0);
    CHECK(l->type == S_IFLNK);
    CHECK(l->ino == st.st_ino);
    CHECK(f->type == S_IFREG);
    CHECK(f->nlink == 2);
    CHECK((h->ino == f->ino && h->btime == f->btime));
    CHECK(d->type == S_IFDIR);
    CHECK_FALSE(entry_identity_at(fd.get(), "missing"));
    CHECK_FALSE(entry_identity_at(fd.get(), "f/under-a-file"));

    // A file replaced under the same name is another entry, even if its inode number is reused.
    OwnerTable t;
    t.set("f", OwnerRecord::for_entry({1000, 1000}, *f));
    REQUIRE(::unlink((dir.path / "h").c_str()) == 0);
    REQUIRE(::unlink((dir.path / "f").c_str()) == 0);
    write_file_atomic(dir.path / "f", "new");
    auto f2 = entry_identity_at(fd.get(), "f");
    REQUIRE(f2);
    INFO("ext4, xfs, btrfs and tmpfs report birth times; the reuse case needs them");
    if (f2->ino == f->ino) REQUIRE((f->btime && f2->btime));
    CHECK_FALSE(t.owner_of("f", *f2));
}

TEST_CASE("owner table files are read without following symlinks and within the bound", "[owner_table]") {
    TempDir dir;
    CHECK_FALSE(read_owner_table(dir.path / "absent"));

    OwnerTable t;
    t.set("a", rec(1, 2, S_IFREG, 3));
    {
        UniqueFd out(::open((dir.path / "owners").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        REQUIRE(out);
        write_owner_table(out.get(), t, "owners");
    }
    auto back = read_owner_table(dir.path / "owners");
    REQUIRE(back);
    CHECK(back->records() == t.records());

    fs::create_symlink("owners", dir.path / "link");
    CHECK_THROWS_AS(read_owner_table(dir.path / "link"), SystemError);
    REQUIRE(::mkfifo((dir.path / "fifo").c_str(), 0600) == 0);
    CHECK_THROWS_WITH(read_owner_table(dir.path / "fifo"), Catch::Contains("not a regular file"));
    {
        UniqueFd big(::open((dir.path / "big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        REQUIRE(::ftruncate(big.get(), static_cast<off_t>(OwnerTable::kMaxFileBytes + 1)) == 0);
    }
    CHECK_THROWS_WITH(read_owner_table(dir.path / "big"), Catch::Contains("larger than 134217728 bytes"));
    write_file_atomic(dir.path / "bad", kHead + "0 0 f 1 - /abs\n");
    CHECK_THROWS_WITH(read_owner_table(dir.path / "bad"), (dir.path / "bad").string() + ":2: absolute path");
}

namespace {

void record_entry(OwnerTable& t, const fs::path& tree, const std::string& path, LayerOwner owner) {
    UniqueFd fd(::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    auto id = entry_identity_at(fd.get(), path);
    REQUIRE(id);
    t.set(path, OwnerRecord::for_entry(owner, *id));
}

}  // namespace

TEST_CASE("a stack of layer trees gives the owner of the layer an overlay shows", "[owner_table][root]") {
    aishell::test::require_root();  // whiteouts are device nodes
    TempDir layers;
    const fs::path l0 = layers.path / "l0", l1 = layers.path / "l1", l2 = layers.path / "l2", l3 = layers.path / "l3";
    for (const auto& d : {l0 / "opt", l1 / "hidden", l2 / "opt" / "app", l2 / "hidden", l2 / "etc", l2 / "through",
                          l3 / "untabled"})
        fs::create_directories(d);
    write_file_atomic(l2 / "etc" / "conf", "c");
    write_file_atomic(l2 / "etc" / "stale", "s");
    write_file_atomic(l2 / "gone", "g");
    write_file_atomic(l2 / "hidden" / "x", "x");
    write_file_atomic(l1 / "hidden" / "other", "o");
    write_file_atomic(l2 / "through" / "x", "x");
    write_file_atomic(l3 / "untabled" / "f", "f");
    fs::create_symlink("/", l0 / "through");  // a symlink above: never followed, it hides
    REQUIRE(::mknod((l1 / "gone").c_str(), S_IFCHR | 0, makedev(0, 0)) == 0);
    REQUIRE(::setxattr((l1 / "hidden").c_str(), "user.overlay.opaque", "y", 1, 0) == 0);
    fs::create_directories(l0 / "untabled");
    write_file_atomic(l0 / "untabled" / "f", "top");  // a layer without a table above a record

    OwnerTable t2, t3;
    for (const char* p : {"opt/app", "etc/conf", "gone", "hidden/x", "through/x"}) record_entry(t2, l2, p, {1234, 2345});
    t2.set("etc/stale", OwnerRecord{{9, 9}, S_IFREG, 1, std::nullopt});  // not this inode
    record_entry(t3, l3, "untabled/f", {77, 77});
    write_file_atomic(layer_owner_table_path(layers.path, "l2"), t2.serialize());
    write_file_atomic(layer_owner_table_path(layers.path, "l3"), t3.serialize());
    CHECK(layer_owner_table_path(layers.path, "l2") == layers.path / "l2.owners");

    auto stack = LayeredOwners::load(layers.path, {"l0", "l1", "l2", "l3"});
    CHECK(stack.has_records());
    CHECK(stack.owner_of("opt/app") == LayerOwner{1234, 2345});  // beneath a layer with /opt only
    CHECK(stack.owner_of("etc/conf") == LayerOwner{1234, 2345});
    CHECK_FALSE(stack.owner_of("etc/stale"));
    CHECK_FALSE(stack.owner_of("gone"));        // whited out by l1
    CHECK_FALSE(stack.owner_of("hidden/x"));    // l1's opaque directory hides l2's
    CHECK_FALSE(stack.owner_of("through/x"));   // l0's symlink hides l2's directory
    CHECK_FALSE(stack.owner_of("untabled/f"));  // l0 holds it and recorded nothing
    CHECK_FALSE(stack.owner_of("opt"));
    CHECK_FALSE(stack.owner_of("/abs"));
    CHECK_FALSE(LayeredOwners::load(layers.path, {"l0", "l1"}).has_records());
    CHECK_THROWS_AS(LayeredOwners::load(layers.path, {"missing"}), SystemError);

    // The same records for another copy of l2 (the same tar extracted again).
    TempDir copy;
    fs::create_directories(copy.path / "opt" / "app");
    fs::create_directories(copy.path / "etc");
    write_file_atomic(copy.path / "etc" / "conf", "c");
    fs::create_directories(copy.path / "gone");  // another type now: left out
    auto re = reidentify(t2, copy.fd().get());
    std::vector<std::string> paths;
    for (const auto& [p, r] : re.records()) paths.push_back(p);
    CHECK(paths == std::vector<std::string>{"etc/conf", "opt/app"});
    UniqueFd cfd = copy.fd();
    CHECK(re.owner_of("etc/conf", *entry_identity_at(cfd.get(), "etc/conf")) == LayerOwner{1234, 2345});
}

namespace {

// A layer tree as a step or an unpack leaves it: one file, and the table recording its owner.
fs::path make_tree(const fs::path& parent, const std::string& name) {
    fs::create_directories(parent / name);
    write_file_atomic(parent / name / "f", "x");
    return parent / name;
}

OwnerTable table_for(const fs::path& tree) {
    UniqueFd fd(::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    OwnerTable t;
    t.set("f", OwnerRecord::for_entry({1234, 2345}, *entry_identity_at(fd.get(), "f")));
    return t;
}

std::optional<LayerOwner> installed_owner(const fs::path& layers, const std::string& name) {
    UniqueFd fd(::open((layers / name).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    auto table = read_owner_table(layer_owner_table_path(layers, name));
    if (!table) return std::nullopt;
    return table->owner_of("f", *entry_identity_at(fd.get(), "f"));
}

}  // namespace

TEST_CASE("a layer tree goes into place with its owner table, written for the tree that is there",
          "[owner_table]") {
    TempDir dir;
    const fs::path layers = dir.path / "layers";
    fs::create_directories(layers);
    auto rename_from = [](const fs::path& from) {
        return [from](const fs::path& target) { return ::rename(from.c_str(), target.c_str()) == 0; };
    };

    // Installed: the table beside it, written before the rename.
    const fs::path first = make_tree(dir.path, "first");
    const OwnerTable first_owners = table_for(first);
    bool table_before_rename = false;
    CHECK(install_layer_tree(layers, "l", first_owners, [&](const fs::path& target) {
        table_before_rename = fs::exists(layer_owner_table_path(layers, "l"));
        return rename_from(first)(target);
    }));
    CHECK(table_before_rename);
    CHECK(installed_owner(layers, "l") == LayerOwner{1234, 2345});

    // Already there: not renamed again, the table left as it is.
    const fs::path second = make_tree(dir.path, "second");
    CHECK_FALSE(install_layer_tree(layers, "l", table_for(second), [](const fs::path&) -> bool {
        FAIL("renamed onto a tree that is there");
        return false;
    }));
    CHECK(installed_owner(layers, "l") == LayerOwner{1234, 2345});

    // There without its table: the table is written for the inodes of the tree that is there.
    fs::remove(layer_owner_table_path(layers, "l"));
    CHECK_FALSE(install_layer_tree(layers, "l", table_for(second), rename_from(second)));
    CHECK(installed_owner(layers, "l") == LayerOwner{1234, 2345});

    // Lost a race: another process's copy went into place between the look and the rename.
    const fs::path mine = make_tree(dir.path, "mine");
    const fs::path theirs = make_tree(dir.path, "theirs");
    CHECK_FALSE(install_layer_tree(layers, "m", table_for(mine), [&](const fs::path& target) {
        REQUIRE(::rename(theirs.c_str(), target.c_str()) == 0);
        return false;
    }));
    CHECK(installed_owner(layers, "m") == LayerOwner{1234, 2345});

    // No owners to record: no table.
    const fs::path plain = make_tree(dir.path, "plain");
    CHECK(install_layer_tree(layers, "p", OwnerTable{}, rename_from(plain)));
    CHECK_FALSE(fs::exists(layer_owner_table_path(layers, "p")));
}
