// The checked number parser (common/parse_number.hpp): every number aishell reads from user
// input goes through it, so that a bad one is an error naming where it came from and which
// field it is, never a bare "stoul".
#include <catch2/catch.hpp>

#include <cstdint>

#include "common/error.hpp"
#include "common/parse_number.hpp"

using namespace aishell;

namespace {

template <typename T>
std::string error_of(std::string_view text, const NumberField& field, int base = 10) {
    try {
        (void)parse_number<T>(text, field, base);
    } catch (const Error& e) {
        return e.message() + (e.hint().empty() ? "" : " | " + e.hint());
    }
    return "no error";
}

}  // namespace

TEST_CASE("parse_number: digits that fit are the number", "[parse_number]") {
    CHECK(parse_number<unsigned>("3", {.what = "fd"}) == 3u);
    CHECK(parse_number<std::int64_t>("-12", {.what = "n"}) == -12);
    CHECK(parse_number<unsigned>("755", {.what = "mode"}, 8) == 0755u);
    CHECK(parse_number<std::uint64_t>("18446744073709551615", {.what = "n"}) == UINT64_MAX);
}

TEST_CASE("parse_number: what is not a number, or does not fit, is an error naming the field", "[parse_number]") {
    CHECK(error_of<unsigned>("99999999999999999999", {.what = "heredoc file descriptor", .where = "Dockerfile:2"}) ==
          "Dockerfile:2: heredoc file descriptor \"99999999999999999999\" is out of range (0 to 4294967295)");
    CHECK(error_of<int>("x", {.what = "FD", .where = "__build-step-server"}) == "__build-step-server: FD \"x\" is not a number");
    CHECK(error_of<unsigned>("-1", {.what = "uid"}) == "uid \"-1\" is not a number");
    CHECK(error_of<unsigned>("", {.what = "uid"}) == "uid \"\" is not a number");
    CHECK(error_of<unsigned>("8", {.what = "mode", .hint = "octal"}, 8) == "mode \"8\" is not an octal number | octal");
    // No sign, spaces or trailing text that std::stoul would accept or skip.
    CHECK(error_of<unsigned>("+1", {.what = "n"}) == "n \"+1\" is not a number");
    CHECK(error_of<unsigned>(" 1", {.what = "n"}) == "n \" 1\" is not a number");
    CHECK(error_of<unsigned>("1x", {.what = "n"}) == "n \"1x\" is not a number");
    CHECK(error_of<std::int8_t>("-129", {.what = "n"}) == "n \"-129\" is out of range (-128 to 127)");
    CHECK_FALSE(to_number<int>("2147483648").has_value());
}
