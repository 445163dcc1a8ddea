// The hidden helpers' table (cli/helper_table.hpp): every module's helpers are found by the
// name their spawners start them with, and nothing else is.
#include <catch2/catch.hpp>

#include "cli/helper_table.hpp"

using namespace aishell;

TEST_CASE("helper table: each module's helpers are dispatched by their entry's name", "[helper_table]") {
    auto dispatched = [](const HelperEntry& h) {
        const HelperEntry* found = cli::find_helper(h.name);
        return found != nullptr && found->main == h.main;
    };
    for (const auto& h : runtime::kHelpers) CHECK(dispatched(h));
    for (const auto& h : composer::kHelpers) CHECK(dispatched(h));
    CHECK(cli::kHelperTable.size() == std::size(runtime::kHelpers) + std::size(composer::kHelpers));
    for (const auto& h : cli::kHelperTable) CHECK(h.main != nullptr);  // not in the static_assert
}

TEST_CASE("helper table: public commands and old names are not helpers", "[helper_table]") {
    CHECK(cli::find_helper("exec") == nullptr);
    CHECK(cli::find_helper("build") == nullptr);
    CHECK(cli::find_helper("__build-step") == nullptr);
    CHECK(cli::find_helper("__build-helper") == nullptr);
    CHECK(cli::find_helper("") == nullptr);
}
