// Helpers shared by the fuzz targets: splitting one input into the parts a target needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace aishell::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

// The parts of text between NUL bytes ("a\0b" -> "a", "b"): NUL never occurs in the text
// formats fuzzed here, so it separates a document from the extra arguments a target takes.
inline std::vector<std::string_view> split_nul(std::string_view text) {
    std::vector<std::string_view> parts;
    for (;;) {
        std::size_t nul = text.find('\0');
        parts.push_back(text.substr(0, nul));
        if (nul == std::string_view::npos) return parts;
        text.remove_prefix(nul + 1);
    }
}

}  // namespace aishell::fuzz
