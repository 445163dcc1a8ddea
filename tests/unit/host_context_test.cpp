// cli/host_context.hpp: the git identity a run passes on.
#include <catch2/catch.hpp>

#include "cli/host_context.hpp"

using namespace aishell::cli;

TEST_CASE("git's user.name and user.email become GIT_AUTHOR_* and GIT_COMMITTER_*, the last value winning", "[host_context]") {
    using namespace std::string_literals;
    auto env = git_identity_env("user.name\nOld Name\0user.email\nada@example.org\0user.name\nAda Lovelace\0"s);
    CHECK(env == std::vector<std::string>{"GIT_AUTHOR_NAME=Ada Lovelace", "GIT_COMMITTER_NAME=Ada Lovelace",
                                          "GIT_AUTHOR_EMAIL=ada@example.org", "GIT_COMMITTER_EMAIL=ada@example.org"});
    CHECK(git_identity_env("user.email\nx@y\0"s) == std::vector<std::string>{"GIT_AUTHOR_EMAIL=x@y", "GIT_COMMITTER_EMAIL=x@y"});
    CHECK(git_identity_env("user.name\0"s).empty());  // `[user] name` without a value
    CHECK(git_identity_env("").empty());
}
