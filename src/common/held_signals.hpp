// HeldSignals: the signals that stop an operation (SIGINT, SIGTERM, SIGHUP) held pending while
// it runs, so that it stops where it can undo what it did, not wherever the signal lands.
//
// A build writes blobs, cache entries and work dirs in steps; killed mid-step by the default
// action it would leave them behind. With the signals blocked, the build asks take() at its
// checkpoints (before each step, and when a step fails: a helper that died of the same
// Ctrl-C) and unwinds through its rollback, then main() exits 128+N. Code that waits on
// children reads the same pending signals with a signalfd (the runtime forwards them to a
// RUN's command). Processes started meanwhile inherit the block until they reset it: the
// runtime resets it for container commands, helpers of aishell keep it (they stop when the
// operation stops them).
#pragma once

#include <signal.h>

#include "common/unique_fd.hpp"

namespace aishell {

class HeldSignals {
public:
    // Blocks SIGINT, SIGTERM and SIGHUP in the calling thread, except those set to SIG_IGN.
    HeldSignals();
    // Drops what is still pending of the signals it blocked (not those an outer guard holds),
    // then the previous mask again.
    ~HeldSignals();
    HeldSignals(const HeldSignals&) = delete;
    HeldSignals& operator=(const HeldSignals&) = delete;

    // One held signal that has arrived, consumed (0: none); an outer guard's too (guards nest:
    // a build holds them, and so does a download within it).
    int take() noexcept;

    // Waits until fd is ready for events (POLLIN, POLLOUT) or a held signal arrives, and
    // returns take(): 0 when fd is ready and nothing arrived. A read or write on a pipe waits
    // in the kernel with the signals blocked, where no checkpoint ever runs (`aishell load`
    // fed by a writer that stalls, `save -o -` into a reader that stopped reading); this wait
    // watches a signalfd of the held set beside fd instead (signalfd(2)).
    int wait(int fd, short events);

private:
    sigset_t set_{};
    sigset_t previous_{};
    UniqueFd signal_fd_;  // made by the first wait()
};

}  // namespace aishell
