// Helper threads that take no process-directed signal.
//
// aishell's signal handling is per thread: HeldSignals blocks SIGINT/SIGTERM/SIGHUP in the
// thread that runs an operation, and the runtime waits for SIGCHLD on a signalfd with SIGCHLD
// blocked. The kernel hands a process-directed signal to any thread that does not block it
// (signal(7)), so a helper thread started with the default mask takes it instead: SIGCHLD is
// then dropped by its default action (the container supervisor never learns that PID 1
// exited and the run hangs: `aishell` building a project image behind the spinner thread) and
// Ctrl-C kills the process past the build's rollback. A new thread inherits its creator's
// mask (pthread_sigmask(3)), so every helper thread is started with all signals blocked.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <thread>
#include <utility>

namespace aishell {

template <class Thread = std::thread, class F, class... Args>
Thread start_signal_free_thread(F&& f, Args&&... args) {
    sigset_t all, previous;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous);
    struct Restore {
        const sigset_t& mask;
        ~Restore() { ::pthread_sigmask(SIG_SETMASK, &mask, nullptr); }
    } restore{previous};
    return Thread(std::forward<F>(f), std::forward<Args>(args)...);
}

}  // namespace aishell
