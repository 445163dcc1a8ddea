// The image names that belong to the three-tier chain (DESIGN.md): aishell:foundation,
// aishell:base and aishell:ext-<hash>. The chain alone makes, moves and removes them; commands
// that name images for the user (tag, rmi, load, build -t) refuse them with chain_name_refusal.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace aishell::composer {

inline constexpr std::string_view kFoundationImage = "aishell:foundation";
inline constexpr std::string_view kBaseImage = "aishell:base";
inline constexpr std::string_view kExtImagePrefix = "aishell:ext-";

// True for the chain's names. Only the exact local names: "docker.io/library/aishell:base"
// or "aishell:basement" are the user's.
bool is_chain_name(std::string_view name);

// When name is the chain's: why `verb` may not touch it and what to do instead, as one sentence
// for an error line ("aishell:base belongs to the image chain; ..."). nullopt otherwise.
std::optional<std::string> chain_name_refusal(std::string_view name, std::string_view verb);

}  // namespace aishell::composer
