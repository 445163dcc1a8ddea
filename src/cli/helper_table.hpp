// Every hidden helper subcommand (common/helper_entry.hpp), assembled from the modules that
// start them; main() dispatches argv[1] from this table before any public command is parsed.
// A new helper is one entry in its module's helpers.hpp: it appears here by itself.
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

#include "common/helper_entry.hpp"
#include "composer/helpers.hpp"
#include "runtime/helpers.hpp"

namespace aishell::cli {

namespace detail {

template <std::size_t N, std::size_t M>
constexpr std::array<HelperEntry, N + M> join(const HelperEntry (&a)[N], const HelperEntry (&b)[M]) {
    std::array<HelperEntry, N + M> out{};
    for (std::size_t i = 0; i < N; ++i) out[i] = a[i];
    for (std::size_t i = 0; i < M; ++i) out[N + i] = b[i];
    return out;
}

// Names start with "__" (so they never shadow a public command) and appear once. (Not checked
// here: that `main` is set. GCC does not fold a function's address compared with null under
// -fsanitize=address, and the static_assert then stops the sanitizer build.)
template <std::size_t N>
constexpr bool well_formed(const std::array<HelperEntry, N>& table) {
    for (std::size_t i = 0; i < N; ++i) {
        if (!table[i].name.starts_with("__")) return false;
        for (std::size_t j = 0; j < i; ++j)
            if (table[i].name == table[j].name) return false;
    }
    return true;
}

}  // namespace detail

inline constexpr auto kHelperTable = detail::join(runtime::kHelpers, composer::kHelpers);
static_assert(detail::well_formed(kHelperTable), "helper names start with __ and are unique");

constexpr const HelperEntry* find_helper(std::string_view name) {
    for (const auto& h : kHelperTable)
        if (h.name == name) return &h;
    return nullptr;
}

}  // namespace aishell::cli
