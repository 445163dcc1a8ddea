// Integers read from user input -- Dockerfiles, flags, the environment, helper arguments --
// through one checked parser. A value that is not a number or does not fit becomes an Error
// that names where it came from and which field it is, never a bare std::out_of_range whose
// what() ("stoul") would reach the user as the whole error line.
#pragma once

#include <charconv>
#include <concepts>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace aishell {

// What a number is, for the error: "<where>: <what> "<text>" is not a number".
struct NumberField {
    std::string_view what;        // the field: "heredoc file descriptor", "--from stage index"
    std::string_view where = {};  // "Dockerfile:3", "SOURCE_DATE_EPOCH", ...: prefixes the message
    std::string_view hint = {};
};

// text as a T in base (digits only, an optional '-' for signed T: no '+', no spaces, no "0x");
// nullopt when it is not one or does not fit.
template <std::integral T>
std::optional<T> to_number(std::string_view text, int base = 10) noexcept {
    T value{};
    const char* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data(), end, value, base);
    if (text.empty() || ec != std::errc() || p != end) return std::nullopt;
    return value;
}

// As to_number, but an Error naming the field (and its range when the value does not fit).
template <std::integral T>
T parse_number(std::string_view text, const NumberField& field, int base = 10) {
    if (auto v = to_number<T>(text, base)) return *v;
    T ignored{};
    const char* end = text.data() + text.size();
    const auto [p, ec] = std::from_chars(text.data(), end, ignored, base);
    const bool too_big = ec == std::errc::result_out_of_range && p == end;
    std::string message = field.where.empty() ? std::string() : std::string(field.where) + ": ";
    message += std::string(field.what) + " \"" + std::string(text) + "\"";
    if (too_big)
        message += " is out of range (" + std::to_string(std::numeric_limits<T>::min()) + " to " +
                   std::to_string(std::numeric_limits<T>::max()) + ")";
    else
        message += base == 8 ? " is not an octal number" : " is not a number";
    throw Error(std::move(message), std::string(field.hint));
}

}  // namespace aishell
