// The worker pool pull and push share: `parallel` threads, each with its own transport (one
// reused connection), take items in order until none is left or one fails; the first failure
// is rethrown after every thread has stopped (the others notice it through `failed`, which the
// caller's transports and clients poll as their cancel condition).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/signal_free_thread.hpp"
#include "registry/http.hpp"

namespace aishell::registry {

// Runs work(transport, i) for i in [0, items). first: a transport to reuse (the one that
// pinged, whose connection is open); the other threads make theirs with factory.
// stop(): polled between items (Ctrl-C).
inline void run_workers(std::size_t items, int parallel, const TransportFactory& factory,
                        std::unique_ptr<Transport> first, std::atomic<bool>& failed,
                        const std::function<bool()>& stop,
                        const std::function<void(Transport&, std::size_t)>& work) {
    if (items == 0) return;
    std::atomic<std::size_t> next{0};
    std::mutex error_mutex;
    std::exception_ptr first_error;
    auto worker = [&](std::unique_ptr<Transport> transport) {
        try {
            if (!transport) transport = factory();
            for (std::size_t i; !failed.load() && !stop() && (i = next++) < items;) work(*transport, i);
        } catch (...) {
            std::lock_guard lock(error_mutex);
            // The first failure is the cause; the others are workers it stopped.
            if (!first_error) first_error = std::current_exception();
            failed = true;
        }
    };
    std::size_t count = std::clamp<std::size_t>(static_cast<std::size_t>(std::max(1, parallel)), 1, items);
    {
        std::vector<std::jthread> threads;
        for (std::size_t i = 1; i < count; ++i)
            threads.push_back(start_signal_free_thread<std::jthread>(worker, nullptr));
        worker(std::move(first));
    }
    if (first_error) std::rethrow_exception(first_error);
}

}  // namespace aishell::registry
