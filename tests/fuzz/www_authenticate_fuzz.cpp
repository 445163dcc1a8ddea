// WWW-Authenticate challenges as a registry sends them (registry/auth: parse_www_authenticate
// skips what it cannot read and never throws), and base64 as the auth files hold credentials
// (decode refuses malformed text; what it accepts re-encodes to a text that decodes the same).
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_input.hpp"
#include "registry/auth.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aishell::registry;
    std::string_view text = aishell::fuzz::as_text(data, size);
    for (const Challenge& c : parse_www_authenticate(text)) {
        (void)c.param("realm");
        (void)c.param("scope");
    }
    if (auto decoded = base64_decode(text)) {
        auto again = base64_decode(base64_encode(*decoded));
        if (!again || *again != *decoded) std::abort();
    }
    return 0;
}
