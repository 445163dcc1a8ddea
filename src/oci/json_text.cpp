// See json_text.hpp.
#include "oci/json_text.hpp"

#include <cstdint>
#include <cstdio>
#include <vector>

namespace aishell::oci {

namespace {

using nlohmann::json;

// Escaped as nlohmann's serializer escapes with ensure_ascii off (serializer::dump_escaped):
// the two-character forms, \u00XX (lowercase) for the other control characters, every other
// byte as it is.
void append_string(std::string& out, std::string_view s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char escaped[8];
                    std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
                    out += escaped;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

void append(std::string& out, const json& j) {
    if (j.is_string()) {
        append_string(out, j.get_ref<const std::string&>());
    } else if (j.is_array()) {
        out += '[';
        for (std::size_t i = 0; i < j.size(); ++i) {
            if (i) out += ',';
            append(out, j[i]);
        }
        out += ']';
    } else if (j.is_object()) {
        out += '{';
        bool first = true;
        for (auto it = j.begin(); it != j.end(); ++it) {
            if (!first) out += ',';
            first = false;
            append_string(out, it.key());
            out += ':';
            append(out, it.value());
        }
        out += '}';
    } else {
        out += j.dump();  // null, a boolean, a number: ASCII
    }
}

}  // namespace

std::string json_document(const json& j, int indent, char indent_char) {
    return j.dump(indent, indent_char, false, json::error_handler_t::replace);
}

std::string json_key_text(const json& j) {
    std::string out;
    append(out, j);
    return out;
}

std::string to_message(const json& j) {
    std::vector<std::uint8_t> bytes = json::to_msgpack(j);
    return {bytes.begin(), bytes.end()};
}

json from_message(std::string_view bytes) {
    return json::from_msgpack(bytes.begin(), bytes.end(), true, false);
}

}  // namespace aishell::oci
