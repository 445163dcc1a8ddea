// Pty pair, raw mode guard and window size (see terminal.hpp).
#include "runtime/terminal.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/error.hpp"

namespace aishell::runtime {

PtyPair open_pty(int size_from) {
    PtyPair p;
    p.master.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!p.master) throw_errno("open", "/dev/ptmx");
    if (::grantpt(p.master.get()) != 0) throw_errno("grantpt");
    if (::unlockpt(p.master.get()) != 0) throw_errno("unlockpt");
    char name[128];
    if (::ptsname_r(p.master.get(), name, sizeof name) != 0) throw_errno("ptsname");
    p.slave.reset(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!p.slave) throw_errno("open", name);
    copy_window_size(size_from, p.master.get());
    // The host terminal's modes (erase char, ...) carry over, so the shell behaves as outside.
    termios t{};
    if (::tcgetattr(size_from, &t) == 0) ::tcsetattr(p.slave.get(), TCSANOW, &t);
    return p;
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
