// Errors as aishell reports them: one message that gains context as it travels up
// ("pull host/repo:tag: fetch blob sha256:ab..: HTTP 401 unauthorized") plus an optional hint.
// Expected branches (ENOSYS fallbacks, a blob that may be absent) are values, not exceptions.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace aishell {

class Error : public std::exception {
public:
    explicit Error(std::string message, std::string hint = {})
        : message_(std::move(message)), hint_(std::move(hint)) {}

    const char* what() const noexcept override { return message_.c_str(); }
    const std::string& message() const noexcept { return message_; }
    const std::string& hint() const noexcept { return hint_; }

    // Prefixes the message with what the caller was doing: "ctx: message".
    Error& add_context(std::string_view context) {
        message_ = std::string(context) + ": " + message_;
        return *this;
    }
    Error& set_hint(std::string hint) {
        hint_ = std::move(hint);
        return *this;
    }

private:
    std::string message_;
    std::string hint_;
};

// An error from a system call: "open /path: No such file or directory".
class SystemError : public Error {
public:
    SystemError(int err, std::string_view operation, std::string_view object = {});
    int code() const noexcept { return errno_; }

private:
    int errno_;
};

// The user stopped the operation (SIGINT/SIGTERM). main() exits 128+signal, as a shell
// reports a command killed by that signal, after printing the one error line.
class Interrupted : public Error {
public:
    Interrupted(std::string message, std::string hint, int signal_number)
        : Error(std::move(message), std::move(hint)), signal_(signal_number) {}
    int exit_status() const noexcept { return 128 + signal_; }

private:
    int signal_;
};

// Throws SystemError(errno, operation, object); for the common "if (rc < 0) throw" pattern.
[[noreturn]] void throw_errno(std::string_view operation, std::string_view object = {});

// Runs fn(); if it throws an aishell::Error, prefixes it with context and rethrows.
template <typename Fn>
decltype(auto) with_context(std::string_view context, Fn&& fn) {
    try {
        return std::forward<Fn>(fn)();
    } catch (Error& e) {
        e.add_context(context);
        throw;
    }
}

}  // namespace aishell
