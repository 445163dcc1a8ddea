// HeldSignals (see held_signals.hpp).
#include "common/held_signals.hpp"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/signalfd.h>
#include <time.h>

#include <initializer_list>

#include "common/error.hpp"

namespace aishell {

HeldSignals::HeldSignals() {
    sigemptyset(&set_);
    // A signal whose disposition is SIG_IGN (SIGHUP under nohup, SIGINT of a background job) is
    // left alone: blocked, it would be queued and stop the operation it was meant to spare.
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
        struct sigaction current {};
        if (sigaction(sig, nullptr, &current) == 0 && current.sa_handler == SIG_IGN) continue;
        sigaddset(&set_, sig);
    }
    pthread_sigmask(SIG_BLOCK, &set_, &previous_);
}

HeldSignals::~HeldSignals() {
    // A signal this guard blocked that is still pending arrived after the operation's last
    // checkpoint: it has finished (or is already stopping for an earlier one), so it is dropped
    // rather than delivered on unblock, where its default action would kill aishell before it
    // reports. One an outer guard holds too stays pending for that guard's checkpoints.
    sigset_t mine;
    sigemptyset(&mine);
    for (int sig : {SIGINT, SIGTERM, SIGHUP})
        if (sigismember(&set_, sig) && !sigismember(&previous_, sig)) sigaddset(&mine, sig);
    const timespec now{0, 0};
    while (!sigisemptyset(&mine) && (sigtimedwait(&mine, nullptr, &now) > 0 || errno == EINTR)) {}
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

int HeldSignals::wait(int fd, short events) {
    if (!signal_fd_) {
        // Readable while one of the set is pending; reading it is left to take(), which
        // consumes the signal itself (an outer guard's pending signal makes it readable too).
        signal_fd_ = UniqueFd(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
        if (!signal_fd_) throw_errno("signalfd");
    }
    for (;;) {
        if (int sig = take()) return sig;
        pollfd fds[2] = {{fd, events, 0}, {signal_fd_.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll");
        }
        if (fds[0].revents != 0) return take();  // ready (or an error, which the I/O reports)
    }
}

}  // namespace aishell
