// Pull progress rendering and the interrupt watcher.
#include "cli/progress.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "cli/format.hpp"
#include "common/file.hpp"
#include "common/signal_free_thread.hpp"

namespace aishell::cli {

namespace {

constexpr auto kRedrawInterval = std::chrono::milliseconds(100);

std::string rate_text(double bytes_per_second) {
    if (bytes_per_second <= 0) return "";
    return human_size(static_cast<std::int64_t>(bytes_per_second)) + "/s";
}

// The average rate of `bytes` moved between start and end; "" for no time or no bytes.
std::string average_rate_text(std::uint64_t bytes, std::chrono::steady_clock::time_point start,
                              std::chrono::steady_clock::time_point end) {
    double seconds = std::chrono::duration<double>(end - start).count();
    return seconds > 0 ? rate_text(static_cast<double>(bytes) / seconds) : "";
}

}  // namespace

registry::DebugLog make_debug_log(const GlobalOptions& global) {
    if (!global.debug) return nullptr;
    return [](std::string_view text) {
        std::string out;
        for (std::size_t start = 0;;) {
            auto nl = text.find('\n', start);
            out += "debug: " + std::string(text.substr(start, nl - start)) + "\n";
            if (nl == std::string_view::npos) break;
            start = nl + 1;
        }
        (void)!::write(STDERR_FILENO, out.data(), out.size());
    };
}

PullProgress::Mode PullProgress::detect_mode(bool quiet) {
    if (quiet) return Mode::Quiet;
    return ::isatty(STDERR_FILENO) ? Mode::Terminal : Mode::Plain;
}

PullProgress::PullProgress(Mode mode, int fd, std::string verb) : mode_(mode), fd_(fd), verb_(std::move(verb)) {
    auto no_color = get_env("NO_COLOR");
    color_ = mode == Mode::Terminal && !(no_color && !no_color->empty());
}

PullProgress::~PullProgress() = default;

void PullProgress::write(const std::string& text) {
    // One write per update so lines from threads never interleave.
    (void)!::write(fd_, text.data(), text.size());
}

PullProgress::Row& PullProgress::row(const oci::Descriptor& d) {
    for (auto& r : rows_)
        if (r.digest == d.digest.str()) return r;
    Row r;
    r.digest = d.digest.str();
    r.total = static_cast<std::uint64_t>(d.size);
    rows_.push_back(r);
    return rows_.back();
}

void PullProgress::on_manifest(const registry::Reference& ref, const oci::Descriptor& manifest, std::size_t blobs) {
    if (mode_ == Mode::Quiet) return;
    std::lock_guard lock(mutex_);
    write(verb_ + " " + ref.str() + " (manifest " + manifest.digest.short_form() + ", " + std::to_string(blobs) +
          " blobs)\n");
}

void PullProgress::on_blob_skipped(const oci::Descriptor& d) {
    if (mode_ == Mode::Quiet) return;
    std::lock_guard lock(mutex_);
    Row& r = row(d);
    r.state = Row::Skipped;
    r.bytes = r.total;
    if (mode_ == Mode::Plain) write("Blob " + d.digest.short_form() + " already present\n");
    else redraw(true);
}

void PullProgress::on_blob_started(const oci::Descriptor& d, std::uint64_t resumed_from) {
    if (mode_ == Mode::Quiet) return;
    std::lock_guard lock(mutex_);
    Row& r = row(d);
    r.state = Row::Running;
    r.bytes = r.start_bytes = resumed_from;
    r.start = std::chrono::steady_clock::now();
    if (mode_ == Mode::Plain) {
        std::string line = "Copying blob " + d.digest.short_form() + " (" + human_size(d.size) + ")";
        if (resumed_from > 0) line += ", resuming at " + human_size(static_cast<std::int64_t>(resumed_from));
        write(line + "\n");
    } else {
        redraw(true);
    }
}

void PullProgress::on_blob_progress(const oci::Descriptor& d, std::uint64_t bytes) {
    if (mode_ != Mode::Terminal) return;  // plain lines report start and end only
    std::lock_guard lock(mutex_);
    row(d).bytes = bytes;
    redraw(false);
}

void PullProgress::on_blob_done(const oci::Descriptor& d) {
    if (mode_ == Mode::Quiet) return;
    std::lock_guard lock(mutex_);
    Row& r = row(d);
    r.state = Row::Done;
    r.bytes = r.total;
    r.end = std::chrono::steady_clock::now();
    if (mode_ == Mode::Plain) {
        std::string rate = average_rate_text(r.total - r.start_bytes, r.start, r.end);
        write("Copied blob " + d.digest.short_form() + " (" + human_size(d.size) + (rate.empty() ? "" : ", " + rate) + ")\n");
    } else {
        redraw(true);
    }
}

void PullProgress::on_message(std::string_view message) {
    if (mode_ == Mode::Quiet) return;
    std::lock_guard lock(mutex_);
    if (mode_ == Mode::Terminal && drawn_lines_ > 0) {
        // Print above the bars: move up, clear, print, and draw the bars again below.
        write("\x1b[" + std::to_string(drawn_lines_) + "A\r\x1b[J");
        drawn_lines_ = 0;
    }
    write(std::string(message) + "\n");
    if (mode_ == Mode::Terminal) redraw(true);
}

void PullProgress::finish() {
    if (mode_ != Mode::Terminal) return;
    std::lock_guard lock(mutex_);
    redraw(true);
}

std::string PullProgress::render(const Row& r) const {
    constexpr int kWidth = 30;
    std::string name = r.digest.substr(0, 19);  // "sha256:" + 12 hex
    double fraction = r.total > 0 ? static_cast<double>(r.bytes) / static_cast<double>(r.total) : 1.0;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '=');
    if (filled < kWidth) bar += '>' + std::string(static_cast<std::size_t>(kWidth - filled - 1), ' ');
    std::string status;
    switch (r.state) {
        case Row::Waiting: status = "waiting"; break;
        case Row::Skipped: status = "already present"; break;
        case Row::Done: {
            // The average rate stays on the finished row (a small blob is done before any
            // redraw could show a running rate).
            status = "done " + human_size(static_cast<std::int64_t>(r.total));
            if (auto rate = average_rate_text(r.total - r.start_bytes, r.start, r.end); !rate.empty())
                status += "  " + rate;
            break;
        }
        case Row::Running: {
            double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.start).count();
            status = human_size(static_cast<std::int64_t>(r.bytes)) + " / " + human_size(static_cast<std::int64_t>(r.total));
            if (seconds > 0.2) status += "  " + rate_text(static_cast<double>(r.bytes - r.start_bytes) / seconds);
            break;
        }
    }
    bool done = r.state == Row::Done || r.state == Row::Skipped;
    std::string line = name + " [" + bar + "] " + status;
    if (color_ && done) line = "\x1b[32m" + line + "\x1b[0m";
    return "\r\x1b[K" + line + "\n";
}

void PullProgress::redraw(bool force) {
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_draw_ < kRedrawInterval) return;
    last_draw_ = now;
    std::string out;
    if (drawn_lines_ > 0) out += "\x1b[" + std::to_string(drawn_lines_) + "A";
    for (const auto& r : rows_) out += render(r);
    drawn_lines_ = rows_.size();
    write(out);
}

// ---- ChainSpinner ----------------------------------------------------------------------------

ChainSpinner::ChainSpinner(Mode mode, int fd) : mode_(mode) {
    if (mode_ == Mode::Quiet) return;
    fd_ = UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (!fd_) mode_ = Mode::Quiet;
    auto no_color = get_env("NO_COLOR");
    color_ = mode_ == Mode::Terminal && !(no_color && !no_color->empty());
}

ChainSpinner::~ChainSpinner() { stop_spinning(); }

std::string ChainSpinner::building_text(composer::ChainStep step) {
    return step == composer::ChainStep::Base ? "Building global base image..." : "Building project image...";
}

std::string ChainSpinner::built_text(composer::ChainStep step, std::chrono::duration<double> took) {
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f", took.count());
    return std::string(step == composer::ChainStep::Base ? "Global base image" : "Project image") + " built (" + seconds + "s)";
}

void ChainSpinner::write(const std::string& text) { (void)!::write(fd_.get(), text.data(), text.size()); }

void ChainSpinner::waiting(composer::ChainStep step) {
    if (mode_ == Mode::Quiet) return;
    std::lock_guard lock(mutex_);
    write(std::string("Waiting for another aishell to finish building the ") +
          (step == composer::ChainStep::Base ? "global base image" : "project image") + "...\n");
}

void ChainSpinner::building(composer::ChainStep step) {
    if (mode_ == Mode::Quiet) return;
    stop_spinning();
    const std::string text = building_text(step);
    if (mode_ == Mode::Plain) {
        write(text + "\n");
        return;
    }
    spinning_ = true;
    thread_ = start_signal_free_thread([this, text] {
        static constexpr const char* kFrames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};
        const auto start = std::chrono::steady_clock::now();
        for (std::size_t i = 0; spinning_.load(); ++i) {
            auto secs = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start).count();
            {
                std::lock_guard lock(mutex_);
                if (!spinning_.load()) break;
                write("\r\x1b[K" + std::string(kFrames[i % 10]) + " " + text + " " + std::to_string(secs) + "s");
            }
            std::this_thread::sleep_for(kRedrawInterval);
        }
    });
}

void ChainSpinner::stop_spinning() {
    if (!thread_.joinable()) return;
    spinning_ = false;
    thread_.join();
    write("\r\x1b[K");
}

void ChainSpinner::built(composer::ChainStep step, std::chrono::duration<double> took) {
    if (mode_ == Mode::Quiet) return;
    stop_spinning();
    std::string line = built_text(step, took);
    write((color_ ? "\x1b[32m✓\x1b[0m " : "✓ ") + line + "\n");
}

void ChainSpinner::failed(composer::ChainStep step) {
    if (mode_ == Mode::Quiet) return;
    stop_spinning();
    (void)step;  // the build's output and the one error line say the rest
}

InterruptWatcher::InterruptWatcher() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old_mask_);
    thread_ = start_signal_free_thread([this, set] {
        // sigtimedwait with a short timeout so the destructor can stop the thread without
        // sending it a signal.
        timespec timeout{0, 100 * 1000 * 1000};
        while (!stop_.load()) {
            int sig = sigtimedwait(&set, nullptr, &timeout);
            if (sig == SIGINT || sig == SIGTERM) {
                signal_ = sig;
                cancelled_ = true;
            }
        }
    });
}

InterruptWatcher::~InterruptWatcher() {
    stop_ = true;
    thread_.join();
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
}

}  // namespace aishell::cli
