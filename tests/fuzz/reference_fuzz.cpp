// Image references (registry/reference). Besides "no crash", checks that normalizing is stable:
// a reference parsed from its own normalized form normalizes to the same text, and names the
// same API host (the store keys images by str(), so a drift would make an image unfindable).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.hpp"
#include "fuzz_input.hpp"
#include "registry/reference.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using aishell::registry::Reference;
    std::string_view text = aishell::fuzz::as_text(data, size);
    Reference ref;
    try {
        ref = Reference::parse(text);
    } catch (const aishell::Error&) {
        return 0;
    }
    Reference again = Reference::parse(ref.str());  // must not throw
    if (again.str() != ref.str() || again.api_host() != ref.api_host() || again.manifest_ref() != ref.manifest_ref())
        std::abort();
    (void)aishell::registry::is_loopback_host(ref.domain);
    (void)aishell::registry::host_without_port(ref.domain);
    return 0;
}
