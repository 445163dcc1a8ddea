// The one JSON parser for documents aishell reads: manifests, indexes, configs, index.json,
// meta.json, registry replies, auth files, seccomp profiles, Dockerfile exec forms (messages
// between aishell's own processes are MessagePack: json_text.hpp).
//
// Why not nlohmann::json::parse directly: its parser is iterative, but copying or comparing a
// parsed value recurses once per level, so a 600 KB config nested 300,000 deep overflows the
// stack (SIGSEGV) in the first copy. Every document is therefore refused above kMaxJsonDepth
// levels before nlohmann sees it. Go's encoding/json (what registries and Docker use) stops at
// 10,000; no image, index or config aishell reads nests more than about 6.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace aishell::oci {

inline constexpr std::size_t kMaxJsonDepth = 256;

// Where text nests arrays/objects deeper than max_depth: the byte offset of the bracket that
// goes one level too deep, else nullopt. Brackets inside strings do not count. Invalid JSON may
// be reported either way; the parse that follows refuses it.
std::optional<std::size_t> json_too_deep_at(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

// The document, or a discarded value (is_discarded()) when text is not JSON or nests too deep:
// the drop-in for json::parse(text, nullptr, false).
nlohmann::json parse_json(std::string_view text);

// The document; throws Error("<what> is not valid JSON[: nested deeper than ...]") otherwise.
nlohmann::json parse_json_or_throw(std::string_view text, std::string_view what);

}  // namespace aishell::oci
