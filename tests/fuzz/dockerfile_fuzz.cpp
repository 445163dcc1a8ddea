// The Dockerfile front end on arbitrary text: parser directives, continuations, heredocs, every
// instruction's flags and arguments (composer/dockerfile_parser, instructions) and then the
// `build --check` rendering, which expands each instruction's words with the shell lexer under
// the Dockerfile's own ARG/ENV scope (composer/dockerfile_json), written as JSON text. A malformed
// Dockerfile must end in aishell::Error ("FILE:LINE: ..."); anything else escaping, or a sanitizer
// report, is a bug.
#include <cstddef>
#include <cstdint>

#include "common/error.hpp"
#include "composer/dockerfile_json.hpp"
#include "composer/instructions.hpp"
#include "fuzz_input.hpp"
#include "oci/json_text.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aishell::composer;
    try {
        Dockerfile df = parse_dockerfile(aishell::fuzz::as_text(data, size), "Dockerfile");
        // As `build --check --json` writes it (cli/cmd_build.cpp).
        (void)aishell::oci::json_document(
            dockerfile_to_json(df, CheckOptions{.build_args = {{"V", "v"}}, .target_platform = "linux/amd64"}), 2);
        (void)dockerfile_to_text(df, CheckOptions{});
    } catch (const aishell::Error&) {
    }
    return 0;
}
