#include "oci/json_parse.hpp"

#include "common/error.hpp"

namespace aishell::oci {

std::optional<std::size_t> json_too_deep_at(std::string_view text, std::size_t max_depth) {
    std::size_t depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;  // the escaped byte cannot end the string
            else if (c == '"') in_string = false;
            continue;
        }
        switch (c) {
        case '"': in_string = true; break;
        case '[':
        case '{':
            if (++depth > max_depth) return i;
            break;
        case ']':
        case '}':
            if (depth > 0) --depth;
            break;
        default: break;
        }
    }
    return std::nullopt;
}

nlohmann::json parse_json(std::string_view text) {
    if (json_too_deep_at(text)) return nlohmann::json(nlohmann::json::value_t::discarded);
    return nlohmann::json::parse(text, nullptr, false);
}

nlohmann::json parse_json_or_throw(std::string_view text, std::string_view what) {
    if (auto at = json_too_deep_at(text))
        throw Error(std::string(what) + " is not valid JSON: nested deeper than " + std::to_string(kMaxJsonDepth) +
                    " levels (at byte " + std::to_string(*at) + ")");
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) throw Error(std::string(what) + " is not valid JSON");
    return j;
}

}  // namespace aishell::oci
