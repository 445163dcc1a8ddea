// HeldSignals: stop signals held pending and taken at checkpoints (common/held_signals.hpp).
#include <signal.h>

#include <catch2/catch.hpp>

#include "common/held_signals.hpp"

using aishell::HeldSignals;

namespace {

bool blocked(int sig) {
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    return sigismember(&mask, sig) == 1;
}

}  // namespace

TEST_CASE("held signals wait for take() and the previous mask comes back", "[held_signals]") {
    REQUIRE_FALSE(blocked(SIGTERM));
    {
        HeldSignals held;
        CHECK(blocked(SIGINT));
        CHECK(blocked(SIGTERM));
        CHECK(blocked(SIGHUP));
        CHECK(held.take() == 0);
        raise(SIGTERM);  // would end the test binary if it were not held
        CHECK(held.take() == SIGTERM);
        CHECK(held.take() == 0);
        raise(SIGINT);  // still pending at the end: dropped, not delivered on unblock
    }
    CHECK_FALSE(blocked(SIGTERM));
    CHECK_FALSE(blocked(SIGINT));
}

TEST_CASE("an inner guard takes the outer one's signals and leaves them pending for it", "[held_signals]") {
    HeldSignals outer;
    {
        HeldSignals inner;
        raise(SIGHUP);
        CHECK(inner.take() == SIGHUP);
        raise(SIGINT);  // arrives after the inner guard's last checkpoint
    }
    CHECK(blocked(SIGINT));  // the outer guard still holds it ...
    CHECK(outer.take() == SIGINT);  // ... and it is still pending for it
}

TEST_CASE("a signal set to SIG_IGN is not held (nohup's SIGHUP stays ignored)", "[held_signals]") {
    struct sigaction ignore {}, previous {};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(sigaction(SIGHUP, &ignore, &previous) == 0);
    {
        HeldSignals held;
        CHECK_FALSE(blocked(SIGHUP));
        raise(SIGHUP);  // ignored, as before
        CHECK(held.take() == 0);
    }
    REQUIRE(sigaction(SIGHUP, &previous, nullptr) == 0);
}
