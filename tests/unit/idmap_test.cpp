// Id mapping: mode choice, /etc/subuid parsing, the meta text and the store check.
#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "runtime/idmap.hpp"

using namespace aishell::runtime;

namespace {
HostIds user_with_range() {
    HostIds h;
    h.uid = 1000;
    h.gid = 1001;
    h.user_name = "dev";
    h.subuid = IdRange{1, 100000, 65536};
    h.subgid = IdRange{1, 200000, 65536};
    h.have_newidmap = true;
    return h;
}
}  // namespace

TEST_CASE("subid ranges are found by name or uid, first line wins", "[idmap]") {
    std::string text = "# comment\nother:1:2\ndev:100000:65536\ndev:500000:10\n";
    auto r = find_subid_range(text, "dev", 1000);
    REQUIRE(r);
    CHECK(*r == IdRange{1, 100000, 65536});
    CHECK(find_subid_range("1000:7:8\n", "dev", 1000) == IdRange{1, 7, 8});
    CHECK_FALSE(find_subid_range("dev:x:1\ndev:5:0\n", "dev", 1000));
}

TEST_CASE("auto mode picks subuid when a range and newuidmap exist, else single", "[idmap]") {
    auto h = user_with_range();
    auto m = choose_mapping(h, false);
    CHECK(m.mode == UsernsMode::Subuid);
    CHECK(m.uids == std::vector<IdRange>{{0, 1000, 1}, {1, 100000, 65536}});
    CHECK(m.gids == std::vector<IdRange>{{0, 1001, 1}, {1, 200000, 65536}});
    h.have_newidmap = false;
    CHECK(choose_mapping(h, false).mode == UsernsMode::Single);
    h = user_with_range();
    h.subgid.reset();
    auto s = choose_mapping(h, false);
    CHECK(s.mode == UsernsMode::Single);
    CHECK(s.uids == std::vector<IdRange>{{0, 1000, 1}});
}

TEST_CASE("AISHELL_USERNS forces a mode, and a forced subuid without a range is an error", "[idmap]") {
    auto h = user_with_range();
    h.forced = "single";
    CHECK(choose_mapping(h, false).mode == UsernsMode::Single);
    h.forced = "subuid";
    h.subuid.reset();
    CHECK_THROWS_WITH(choose_mapping(h, false), Catch::Contains("user dev has no /etc/subuid and /etc/subgid range"));
    h.forced = "bogus";
    CHECK_THROWS_WITH(choose_mapping(h, false), "AISHELL_USERNS=bogus is not a user namespace mode");
}

TEST_CASE("keep-id maps the caller to itself in single mode and amid its sub range in subuid mode", "[idmap]") {
    auto h = user_with_range();
    h.forced = "single";
    auto m = choose_mapping(h, true);
    CHECK(m.uids == std::vector<IdRange>{{1000, 1000, 1}});
    CHECK(m.gids == std::vector<IdRange>{{1001, 1001, 1}});
    CHECK_FALSE(m.uid_mapped_inside(0));
    h.forced.clear();
    // podman's layout: 0..uid-1 and uid+1..65536 from the range, uid itself = the caller.
    auto k = choose_mapping(h, true);
    CHECK(k.mode == UsernsMode::Subuid);
    CHECK(k.uids == std::vector<IdRange>{{0, 100000, 1000}, {1000, 1000, 1}, {1001, 101000, 64536}});
    CHECK(k.gids == std::vector<IdRange>{{0, 200000, 1001}, {1001, 1001, 1}, {1002, 201001, 64535}});
    CHECK(k.uid_inside(1000) == 1000u);
    CHECK(k.uid_inside(100000) == 0u);
    CHECK(k.uid_inside(165535) == 65536u);
}

TEST_CASE("keep-id with a uid beyond the sub range maps the whole range below it", "[idmap]") {
    auto h = user_with_range();
    h.uid = 70000;
    auto k = choose_mapping(h, true);
    CHECK(k.uids == std::vector<IdRange>{{0, 100000, 65536}, {70000, 70000, 1}});
}

TEST_CASE("the caller as an image's user: that id in single mode, amid the sub range in subuid mode", "[idmap]") {
    auto h = user_with_range();
    // podman's --userns=keep-id:uid=1000,gid=1000 for a caller 1000:1001 whose USER is 1000:1000.
    auto m = choose_mapping_as(h, 1000, 1000);
    CHECK(m.mode == UsernsMode::Subuid);
    CHECK(m.uids == std::vector<IdRange>{{0, 100000, 1000}, {1000, 1000, 1}, {1001, 101000, 64536}});
    CHECK(m.gids == std::vector<IdRange>{{0, 200000, 1000}, {1000, 1001, 1}, {1001, 201000, 64536}});
    CHECK(choose_mapping_as(h, 0, 0) == choose_mapping(h, false));
    CHECK(choose_mapping_as(h, h.uid, h.gid) == choose_mapping(h, true));
    // Near the top of the id space the range above is cut where ids end (4294967294).
    auto top = choose_mapping_as(h, 4294967290u, 0);
    CHECK(top.uids == std::vector<IdRange>{{0, 100000, 65536}, {4294967290u, 1000, 1}});
    h.forced = "single";
    auto s = choose_mapping_as(h, 1000, 1000);
    CHECK(s.uids == std::vector<IdRange>{{1000, 1000, 1}});
    CHECK(s.gids == std::vector<IdRange>{{1000, 1001, 1}});
}

TEST_CASE("real root gets the identity mapping", "[idmap]") {
    HostIds h;
    auto m = choose_mapping(h, false);
    CHECK(m.mode == UsernsMode::Root);
    CHECK(m.uids == std::vector<IdRange>{{0, 0, 4294967295u}});
}

TEST_CASE("mappings round-trip through their meta text and another mapping is refused", "[idmap]") {
    auto m = choose_mapping(user_with_range(), false);
    CHECK(m.to_string() == "subuid u=0:1000:1,1:100000:65536 g=0:1001:1,1:200000:65536");
    CHECK(IdMapping::parse(m.to_string()) == m);
    CHECK(m.uid_inside(100004) == 5u);
    CHECK_FALSE(m.uid_inside(99999));
    CHECK_NOTHROW(check_store_mapping(std::nullopt, m));
    CHECK_NOTHROW(check_store_mapping(m.to_string(), m));
    CHECK_THROWS_WITH(check_store_mapping(std::string("single u=0:1000:1 g=0:1001:1"), m),
                      "this store's layers are owned for id mapping 'single u=0:1000:1 g=0:1001:1', but this run "
                      "would use 'subuid u=0:1000:1,1:100000:65536 g=0:1001:1,1:200000:65536'");
    CHECK_THROWS(IdMapping::parse("subuid u=0:1 g="));
}
