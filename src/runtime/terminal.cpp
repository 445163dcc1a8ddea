// Terminal settings, raw mode guard and window size (see terminal.hpp).
#include "runtime/terminal.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

namespace aishell::runtime {

TerminalSettings read_terminal_settings(int fd) noexcept {
    TerminalSettings t;
    t.has_modes = ::tcgetattr(fd, &t.modes) == 0;
    t.has_size = ::ioctl(fd, TIOCGWINSZ, &t.size) == 0;
    return t;
}

bool copy_window_size(int from, int to) noexcept {
    winsize ws{};
    if (::ioctl(from, TIOCGWINSZ, &ws) != 0) return false;
    return ::ioctl(to, TIOCSWINSZ, &ws) == 0;
}

RawTerminal::RawTerminal(int fd) : fd_(fd) {
    termios t{};
    if (!::isatty(fd) || ::tcgetattr(fd, &t) != 0) return;
    saved_ = t;
    ::cfmakeraw(&t);
    // TCSADRAIN, not TCSAFLUSH: what the user typed ahead while the container started is kept
    // and reaches the command.
    if (::tcsetattr(fd, TCSADRAIN, &t) != 0) saved_.reset();
}

RawTerminal::~RawTerminal() {
    if (saved_) ::tcsetattr(fd_, TCSADRAIN, &*saved_);
}

}  // namespace aishell::runtime
