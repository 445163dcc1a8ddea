// .dockerignore reading and matching (composer/dockerignore). Input: the file's text, then
// NUL-separated context paths to ask excluded() about (a few fixed ones are always asked).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.hpp"
#include "composer/dockerignore.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aishell::composer;
    auto parts = aishell::fuzz::split_nul(aishell::fuzz::as_text(data, size));
    try {
        IgnoreMatcher matcher(read_dockerignore(parts[0]));
        for (const char* fixed : {".", "a", "a/b/c.txt", "Dockerfile", ".git/config"}) (void)matcher.excluded(fixed);
        for (std::size_t i = 1; i < parts.size(); ++i) (void)matcher.excluded(parts[i]);
    } catch (const aishell::Error&) {
    }
    return 0;
}
