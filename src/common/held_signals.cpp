// HeldSignals (see held_signals.hpp).
#include "common/held_signals.hpp"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include <initializer_list>

namespace aishell {

HeldSignals::HeldSignals() {
    sigemptyset(&set_);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, sig);
    pthread_sigmask(SIG_BLOCK, &set_, &previous_);
}

HeldSignals::~HeldSignals() {
    // Signals still pending arrived after the operation's last checkpoint: it has finished (or is
    // already stopping for an earlier one), so they are dropped rather than delivered on unblock,
    // where their default action would kill aishell before it reports.
    while (take() != 0) {}
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

int HeldSignals::take() noexcept {
    const timespec now{0, 0};
    for (;;) {
        int sig = sigtimedwait(&set_, nullptr, &now);
        if (sig > 0) return sig;
        if (errno != EINTR) return 0;  // EAGAIN: nothing pending
    }
}

}  // namespace aishell
