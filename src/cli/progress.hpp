// Progress output for long registry operations, and Ctrl-C handling for them.
// PullProgress renders PullObserver events on stderr: one bar per blob (bytes, rate) redrawn
// in place on a terminal, plain lines when stderr is not a terminal, nothing when quiet.
// Colour only on a terminal and never with NO_COLOR set (https://no-color.org).
// ChainSpinner draws the three-tier chain's builds (composer/chain.hpp): a spinner with the
// elapsed time while an image builds, then one line ("✓ Global base image built (12.3s)").
// InterruptWatcher turns SIGINT/SIGTERM into a cancellation flag so a pull stops cleanly,
// leaving the store as it was, and the user sees one "interrupted" error.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>

#include "cli/command.hpp"
#include "common/unique_fd.hpp"
#include "composer/chain.hpp"
#include "registry/pull.hpp"

namespace aishell::cli {

// The --debug logger for registry operations: each line on stderr prefixed "debug: ".
// The registry client has already redacted credentials and tokens. Null without --debug.
registry::DebugLog make_debug_log(const GlobalOptions& global);

class PullProgress final : public registry::PullObserver {
public:
    enum class Mode { Quiet, Plain, Terminal };
    // Quiet when quiet, else Terminal when stderr is a terminal, else Plain.
    static Mode detect_mode(bool quiet);
    // verb: the first word of the header line ("Pulling", "Pushing").
    explicit PullProgress(Mode mode, int fd = 2, std::string verb = "Pulling");
    ~PullProgress() override;

    void on_manifest(const registry::Reference&, const oci::Descriptor&, std::size_t) override;
    void on_blob_skipped(const oci::Descriptor&) override;
    void on_blob_started(const oci::Descriptor&, std::uint64_t resumed_from) override;
    void on_blob_progress(const oci::Descriptor&, std::uint64_t bytes) override;
    void on_blob_done(const oci::Descriptor&) override;
    void on_message(std::string_view) override;
    // Draws the final state (terminal mode); called before the result is printed.
    void finish();

private:
    struct Row {
        std::string digest;
        std::uint64_t total = 0;
        std::uint64_t bytes = 0;
        std::uint64_t start_bytes = 0;
        std::chrono::steady_clock::time_point start, end;  // end: when it was done
        enum { Waiting, Running, Done, Skipped } state = Waiting;
    };
    Row& row(const oci::Descriptor& d);  // caller holds mutex_
    void redraw(bool force);             // caller holds mutex_
    std::string render(const Row& r) const;
    void write(const std::string& text);

    Mode mode_;
    int fd_;
    std::string verb_;
    bool color_;
    std::mutex mutex_;
    std::vector<Row> rows_;
    std::size_t drawn_lines_ = 0;
    std::chrono::steady_clock::time_point last_draw_;
};

// The chain's build output on stderr. Terminal: a spinner redrawn in place; Plain: the same
// words as lines; Quiet: nothing. It writes through its own duplicate of stderr, so it still
// reaches the terminal while a quiet build sends fds 1 and 2 into its capture file (the step
// output that file shows when a step fails goes to stderr as it is).
class ChainSpinner final : public composer::ChainProgress {
public:
    using Mode = PullProgress::Mode;
    explicit ChainSpinner(Mode mode, int fd = 2);
    ~ChainSpinner() override;
    ChainSpinner(const ChainSpinner&) = delete;
    ChainSpinner& operator=(const ChainSpinner&) = delete;

    void waiting(composer::ChainStep step) override;
    void building(composer::ChainStep step) override;
    void built(composer::ChainStep step, std::chrono::duration<double> took) override;
    void failed(composer::ChainStep step) override;

    // "Building global base image..." / "Building project image..." and the done lines.
    static std::string building_text(composer::ChainStep step);
    static std::string built_text(composer::ChainStep step, std::chrono::duration<double> took);

private:
    void stop_spinning();  // joins the thread and clears the spinner's line
    void write(const std::string& text);

    Mode mode_;
    UniqueFd fd_;
    bool color_ = false;
    std::mutex mutex_;
    std::thread thread_;
    std::atomic<bool> spinning_{false};
};

// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after it) and
// watches for them on a thread of its own: a signal sets cancelled(). Construct it before
// starting worker threads. The previous signal mask comes back on destruction.
class InterruptWatcher {
public:
    InterruptWatcher();
    ~InterruptWatcher();
    InterruptWatcher(const InterruptWatcher&) = delete;
    InterruptWatcher& operator=(const InterruptWatcher&) = delete;
    const std::atomic<bool>* flag() const noexcept { return &cancelled_; }
    bool cancelled() const noexcept { return cancelled_.load(); }
    int signal_number() const noexcept { return signal_.load(); }  // valid once cancelled()

private:
    std::atomic<bool> cancelled_{false};
    std::atomic<int> signal_{0};
    std::atomic<bool> stop_{false};
    sigset_t old_mask_{};
    std::thread thread_;
};

}  // namespace aishell::cli
