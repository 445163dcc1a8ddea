#include <catch2/catch.hpp>

#include <sys/stat.h>

#include "composer/chain_trust.hpp"

using aishell::composer::is_private_group;
using aishell::composer::Untrusted;
using aishell::composer::untrusted_reason;

namespace {

struct stat stat_of(uid_t uid, mode_t mode) {
    struct stat st {};
    st.st_uid = uid;
    st.st_gid = 1001;
    st.st_mode = mode;
    return st;
}

}  // namespace

TEST_CASE("a chain input must belong to the caller and be writable by nobody else", "[chain][trust]") {
    CHECK(untrusted_reason(stat_of(1001, S_IFREG | 0644), 1001, false) == Untrusted::None);
    CHECK(untrusted_reason(stat_of(1001, S_IFDIR | 0755), 1001, false) == Untrusted::None);
    CHECK(untrusted_reason(stat_of(1001, S_IFREG | 0600), 1001, false) == Untrusted::None);
    // Another user's file, however read-only, is refused: its content is theirs.
    CHECK(untrusted_reason(stat_of(1003, S_IFREG | 0644), 1001, false) == Untrusted::Owner);
    CHECK(untrusted_reason(stat_of(0, S_IFDIR | 0755), 1001, false) == Untrusted::Owner);
    CHECK(untrusted_reason(stat_of(1001, S_IFREG | 0646), 1001, true) == Untrusted::OtherWritable);
    CHECK(untrusted_reason(stat_of(1001, S_IFDIR | 01777), 1001, true) == Untrusted::OtherWritable);
    CHECK(untrusted_reason(stat_of(1001, S_IFREG | 0664), 1001, false) == Untrusted::GroupWritable);
    // umask 002 with a user private group (Debian, Ubuntu): group write is the caller's own.
    CHECK(untrusted_reason(stat_of(1001, S_IFREG | 0664), 1001, true) == Untrusted::None);
    CHECK(untrusted_reason(stat_of(1001, S_IFDIR | 0775), 1001, true) == Untrusted::None);
}

TEST_CASE("a symlink's mode is not looked at, its owner is", "[chain][trust]") {
    CHECK(untrusted_reason(stat_of(1001, S_IFLNK | 0777), 1001, false) == Untrusted::None);
    CHECK(untrusted_reason(stat_of(1003, S_IFLNK | 0777), 1001, false) == Untrusted::Owner);
}

TEST_CASE("a private group is the caller's primary group, named as the caller, with no other member",
          "[chain][trust]") {
    CHECK(is_private_group(1001, "alice", {}, 1001, "alice"));
    CHECK(is_private_group(1001, "alice", {"alice"}, 1001, "alice"));
    CHECK_FALSE(is_private_group(1001, "alice", {"alice", "mallory"}, 1001, "alice"));
    CHECK_FALSE(is_private_group(100, "users", {}, 100, "alice"));       // a shared primary group
    CHECK_FALSE(is_private_group(1002, "alice", {}, 1001, "alice"));     // not the caller's primary group
    CHECK_FALSE(is_private_group(1001, "", {}, 1001, ""));               // a caller without a passwd entry
}
