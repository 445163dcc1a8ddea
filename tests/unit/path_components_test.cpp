// PathComponents (common/path_components.hpp): the one splitter of '/'-separated paths that
// .dockerignore cleaning, layer extraction, COPY and the image filesystem walk with.
#include <catch2/catch.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "common/path_components.hpp"

using aishell::PathComponents;

namespace {

std::vector<std::string> components(std::string_view path) {
    std::vector<std::string> out;
    for (std::string_view c : PathComponents(path)) out.emplace_back(c);
    return out;
}

}  // namespace

TEST_CASE("PathComponents gives each component in order", "[path_components]") {
    CHECK(components("a") == std::vector<std::string>{"a"});
    CHECK(components("usr/lib/x86_64") == std::vector<std::string>{"usr", "lib", "x86_64"});
    CHECK(components("a/./../b") == std::vector<std::string>{"a", ".", "..", "b"});
}

TEST_CASE("PathComponents leaves out empty components", "[path_components]") {
    CHECK(components("").empty());
    CHECK(components("/").empty());
    CHECK(components("///").empty());
    CHECK(components("/etc//passwd/") == std::vector<std::string>{"etc", "passwd"});
    CHECK(components("//a") == std::vector<std::string>{"a"});
}

TEST_CASE("PathComponents views into the path it was given", "[path_components]") {
    const std::string path = "dir/file";
    auto it = PathComponents(path).begin();
    CHECK((*it).data() == path.data());
    ++it;
    CHECK((*it).data() == path.data() + 4);
    CHECK(++it == PathComponents(path).end());
}
