#include <catch2/catch.hpp>

#include "composer/chain_names.hpp"

using aishell::composer::chain_name_refusal;
using aishell::composer::is_chain_name;

TEST_CASE("the chain's names are exactly foundation, base and ext-*", "[chain]") {
    CHECK(is_chain_name("aishell:foundation"));
    CHECK(is_chain_name("aishell:base"));
    CHECK(is_chain_name("aishell:ext-0123456789ab"));
    CHECK_FALSE(is_chain_name("aishell:ext-"));
    CHECK_FALSE(is_chain_name("aishell:basement"));
    CHECK_FALSE(is_chain_name("aishell:latest"));
    CHECK_FALSE(is_chain_name("docker.io/library/aishell:base"));
    CHECK_FALSE(is_chain_name("myimage"));
}

TEST_CASE("a refusal names the image, the verb and what to do instead", "[chain]") {
    CHECK_FALSE(chain_name_refusal("mine:1", "removed"));
    auto base = chain_name_refusal("aishell:base", "removed");
    REQUIRE(base);
    CHECK(base->find("aishell:base belongs to aishell's image chain and cannot be removed;") == 0);
    CHECK(base->find("~/.aishell/Dockerfile") != std::string::npos);
    auto foundation = chain_name_refusal("aishell:foundation", "overwritten");
    REQUIRE(foundation);
    CHECK(foundation->find("setup --foundation REF") != std::string::npos);
    auto ext = chain_name_refusal("aishell:ext-0123456789ab", "overwritten");
    REQUIRE(ext);
    CHECK(ext->find("volumes prune") != std::string::npos);
}
