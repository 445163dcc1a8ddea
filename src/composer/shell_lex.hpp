// Variable substitution in Dockerfile words, as BuildKit's frontend/dockerfile/shell lexer does
// it: $V, ${V}, ${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?msg} ${V?msg}, ${V#p} ${V##p} ${V%p} ${V%%p}
// ${V/p/r} ${V//p/r} (patterns: * any string, ? any character, no brackets); single quotes are literal, double quotes expand $ and honour the escape
// character before " $ and itself; outside quotes the escape character escapes anything.
// process_word keeps the result as one word (ENV values, WORKDIR, COPY paths); process_words
// splits on unquoted whitespace, including whitespace inside expanded values (EXPOSE).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace aishell::composer {

// Looks a variable up; nullopt when it is not set (which differs from set-but-empty for the
// ${V-w} / ${V+w} / ${V?msg} forms).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// An EnvLookup over an ordered "K=V" list or a map, as the build engine keeps them.
EnvLookup env_from_map(const std::map<std::string, std::string>& env);

struct LexOptions {
    char escape = '\\';
    // Keep quote characters in the result (heredoc content, heredoc delimiters).
    bool raw_quotes = false;
    // Keep escape characters in the result (heredoc content).
    bool raw_escapes = false;
    // Leave references to unset variables as written instead of expanding them to "".
    bool skip_unset = false;
    // Quotes are ordinary characters ($ expands inside '...' too): BuildKit's SkipProcessQuotes,
    // used to expand COPY/ADD heredoc bodies.
    bool skip_quotes = false;
};

struct LexResult {
    std::string word;                 // the whole input, expanded, quotes removed
    std::vector<std::string> words;   // the same split on unquoted whitespace
    std::set<std::string> matched;    // variables referenced that were set
    std::set<std::string> unmatched;  // variables referenced that were not set
};

// Expands one Dockerfile word. Throws aishell::Error on a syntax error ("missing '}'",
// "bad substitution", an unterminated quote) or a ${V?msg} whose V is unset.
LexResult process(std::string_view input, const EnvLookup& env, const LexOptions& options = {});

inline std::string process_word(std::string_view input, const EnvLookup& env, char escape = '\\') {
    return process(input, env, LexOptions{.escape = escape}).word;
}
inline std::vector<std::string> process_words(std::string_view input, const EnvLookup& env,
                                              char escape = '\\') {
    return process(input, env, LexOptions{.escape = escape}).words;
}

}  // namespace aishell::composer
