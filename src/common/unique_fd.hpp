// UniqueFd: a move-only owner of a file descriptor, closed on destruction.
#pragma once

#include <errno.h>
#include <unistd.h>

#include <utility>

namespace aishell {

// close(2) of a raw fd that keeps errno, so that the caller reports the error that led here,
// not close's. Async-signal-safe: the runtime's child uses it between clone and exec.
inline void close_keep_errno(int fd) noexcept {
    const int saved = errno;
    ::close(fd);
    errno = saved;
}

class UniqueFd {
public:
    UniqueFd() noexcept = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept {
        if (this != &other) reset(other.release());
        return *this;
    }
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

}  // namespace aishell
