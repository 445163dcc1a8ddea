// Terminal handling for `exec -t`: a pty pair made in the parent (the slave becomes the
// command's controlling terminal), the host terminal in raw mode for the run (restored by the
// guard's destructor, also when an exception unwinds), and window size propagation.
#pragma once

#include <termios.h>

#include <optional>

#include "common/unique_fd.hpp"

namespace aishell::runtime {

struct PtyPair {
    UniqueFd master;
    UniqueFd slave;
};

// A new pty whose size is copied from size_from (when it is a terminal). Throws Error.
PtyPair open_pty(int size_from);

// Copies the window size of from to to (TIOCGWINSZ/TIOCSWINSZ); false when from is no tty.
bool copy_window_size(int from, int to) noexcept;

class RawTerminal {
public:
    // Puts fd in raw mode when it is a terminal; a no-op guard otherwise.
    explicit RawTerminal(int fd);
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;
    ~RawTerminal();

private:
    int fd_;
    std::optional<termios> saved_;
};

}  // namespace aishell::runtime
