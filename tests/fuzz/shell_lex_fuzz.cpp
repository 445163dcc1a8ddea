// The Dockerfile shell lexer (composer/shell_lex) on one word. The first byte chooses the
// options (escape character, raw quotes/escapes, skip_unset, skip_quotes); the rest is the word,
// expanded against a small fixed environment with set, empty and whitespace-holding values.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "common/error.hpp"
#include "composer/shell_lex.hpp"
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aishell::composer;
    if (size == 0) return 0;
    static const std::map<std::string, std::string> env = {
        {"V", "val"}, {"EMPTY", ""}, {"SP", " a  b "}, {"P", "/usr/local/bin"}, {"STAR", "*?"}};
    const std::uint8_t flags = data[0];
    LexOptions options{.escape = (flags & 1) ? '`' : '\\',
                       .raw_quotes = (flags & 2) != 0,
                       .raw_escapes = (flags & 4) != 0,
                       .skip_unset = (flags & 8) != 0,
                       .skip_quotes = (flags & 16) != 0};
    try {
        (void)process(aishell::fuzz::as_text(data + 1, size - 1), env_from_map(env), options);
    } catch (const aishell::Error&) {
    }
    return 0;
}
