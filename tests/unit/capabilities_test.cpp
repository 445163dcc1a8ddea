// Capability sets: Docker's default 14 and --cap-add/--cap-drop.
#include <linux/capability.h>

#include <catch2/catch.hpp>

#include "runtime/capabilities.hpp"

using namespace aishell::runtime;

TEST_CASE("the default set is Docker's 14 capabilities", "[caps]") {
    auto names = capability_names(default_capabilities());
    CHECK(names == std::vector<std::string>{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                                            "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                                            "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE",
                                            "CAP_SETFCAP"});
    CHECK(default_capabilities() == 0xa80425fbull);  // CapEff of `docker run`
}

TEST_CASE("cap-add and cap-drop, with ALL and any spelling", "[caps]") {
    CHECK(compute_capabilities({"sys_admin"}, {}) == (default_capabilities() | (1ull << CAP_SYS_ADMIN)));
    CHECK(compute_capabilities({}, {"CAP_CHOWN", "NET_RAW"}) ==
          (default_capabilities() & ~((1ull << CAP_CHOWN) | (1ull << CAP_NET_RAW))));
    CHECK(compute_capabilities({}, {"ALL"}) == 0);
    CHECK(compute_capabilities({"KILL"}, {"all"}) == (1ull << CAP_KILL));
    CHECK(compute_capabilities({"ALL"}, {"SYS_ADMIN"}) == (all_capabilities() & ~(1ull << CAP_SYS_ADMIN)));
    CHECK_THROWS_WITH(compute_capabilities({"CAP_FLY"}, {}), "unknown capability 'CAP_FLY'");
}
