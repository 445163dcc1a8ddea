// Terminal handling for `-t`: the host terminal's settings that the container's pty starts with
// (the pty itself is opened inside the container, child.cpp), the host terminal in raw mode for
// the run (restored by the guard's destructor, also when an exception unwinds), and window size
// propagation.
#pragma once

#include <sys/ioctl.h>
#include <termios.h>

#include <optional>

namespace aishell::runtime {

// What the container's pty copies from the user's terminal when it is made: the modes (erase
// char, ...) so that the shell behaves as outside, and the window size.
struct TerminalSettings {
    bool has_modes = false;
    termios modes{};
    bool has_size = false;
    winsize size{};
};

// The settings of fd; each part absent when fd is no terminal.
TerminalSettings read_terminal_settings(int fd) noexcept;

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
