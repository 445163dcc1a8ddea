// runtime/process.hpp: the owner a build's file operation gives USER (BuildKit's readUser).
#include <catch2/catch.hpp>

#include "runtime/process.hpp"

using namespace aishell::runtime;

TEST_CASE("a file operation's owner follows BuildKit: unknown names are root", "[process]") {
    const UserDb db{"root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1001::/home/dev:/bin/sh\n",
                    "root:x:0:\ndevs:x:1001:\nstaff:x:50:dev\n"};
    auto owner = [&](const std::string& spec) {
        auto u = resolve_file_owner(spec, db);
        return std::make_pair(u.uid, u.gid);
    };
    using P = std::pair<std::uint32_t, std::uint32_t>;
    CHECK(owner("dev") == P{1000, 1001});        // the primary group, no supplementary ones
    CHECK(owner("1000") == P{1000, 1000});       // a bare uid is uid:uid, known or not
    CHECK(owner("4242") == P{4242, 4242});
    CHECK(owner("dev:staff") == P{1000, 50});
    CHECK(owner("dev:7") == P{1000, 7});
    CHECK(owner("nosuchuser") == P{0, 0});       // resolve_user throws here; BuildKit uses 0
    CHECK(owner("nosuchuser:staff") == P{0, 50});
    CHECK(owner("1000:nosuchgroup") == P{1000, 1000});
    CHECK(owner("dev:nosuchgroup") == P{1000, 1001});
    CHECK(resolve_file_owner("dev", UserDb{}).uid == 0);  // no /etc/passwd at all
    CHECK_THROWS(resolve_user("nosuchuser", db));
}
