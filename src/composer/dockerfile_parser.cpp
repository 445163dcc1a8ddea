// Dockerfile lines to nodes, following BuildKit's frontend/dockerfile/parser (parser.go,
// line_parsers.go, directives.go): read for behaviour, written afresh. Where BuildKit
// silently drops input (text after a JSON array) we report an error instead.
#include "composer/dockerfile_parser.hpp"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/parse_number.hpp"
#include "composer/shell_lex.hpp"
#include "oci/json_parse.hpp"

namespace aishell::composer {

void fail_at(const std::string& file, int line, const std::string& message, std::string hint) {
    throw Error(file + ":" + std::to_string(line) + ": " + message, std::move(hint));
}

const std::vector<std::string>& known_instructions() {
    static const std::vector<std::string> names = {
        "ADD",     "ARG",        "CMD",   "COPY",  "ENTRYPOINT", "ENV",     "EXPOSE",
        "FROM",    "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
        "STOPSIGNAL", "USER",    "VOLUME", "WORKDIR"};
    return names;
}

namespace {

std::string upper(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}
std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }
// BuildKit's reWhitespace is [\t\v\f\r ]+ (no \n: logical lines never contain one).
bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'; }

std::string_view trim_left(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    return s;
}
std::string_view trim(std::string_view s) {
    s = trim_left(s);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

std::vector<std::string> split_lines(std::string_view text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t nl = text.find('\n', start);
        std::size_t end = nl == std::string_view::npos ? text.size() : nl;
        std::string_view line = text.substr(start, end - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        lines.emplace_back(line);
        start = end + 1;
    }
    if (!lines.empty() && lines[0].rfind("\xEF\xBB\xBF", 0) == 0) lines[0].erase(0, 3);
    return lines;
}

bool is_comment(std::string_view raw) {
    raw = trim_left(raw);
    return !raw.empty() && raw.front() == '#';
}

// The directive block: "# name = value" lines at the top; anything else ends it.
class DirectiveReader {
public:
    DirectiveReader(Directives& d, const std::string& file) : d_(d), file_(file) {}

    void line(std::string_view raw, int lineno) {
        if (done_) return;
        auto kv = match(trim_left(raw));
        if (!kv) {
            done_ = true;
            return;
        }
        auto [name, value] = *kv;
        if (name != "escape" && name != "syntax" && name != "check") {
            done_ = true;  // unknown directive: a comment, and the end of the block
            return;
        }
        if (std::find(seen_.begin(), seen_.end(), name) != seen_.end())
            fail_at(file_, lineno, "only one " + name + " parser directive can be used", "remove the second # " + name + "= line");
        seen_.push_back(name);
        if (name == "escape") {
            if (value != "\\" && value != "`")
                fail_at(file_, lineno, "invalid escape token '" + value + "' does not match ` or \\",
                        "write # escape=\\ (the default) or # escape=`");
            d_.escape = value[0];
        } else if (name == "syntax") {
            d_.syntax = value;
        } else {
            d_.check = value;
        }
    }

private:
    // ^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$
    static std::optional<std::pair<std::string, std::string>> match(std::string_view s) {
        if (s.empty() || s.front() != '#') return std::nullopt;
        s.remove_prefix(1);
        s = trim_left(s);
        std::size_t n = 0;
        if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return std::nullopt;
        while (n < s.size() && std::isalnum(static_cast<unsigned char>(s[n]))) ++n;
        std::string name = lower(s.substr(0, n));
        s = trim_left(s.substr(n));
        if (s.empty() || s.front() != '=') return std::nullopt;
        std::string_view value = trim(s.substr(1));
        if (value.empty()) return std::nullopt;
        return std::make_pair(name, std::string(value));
    }

    Directives& d_;
    const std::string& file_;
    bool done_ = false;
    std::vector<std::string> seen_;
};

// Removes a trailing escape character (plus spaces/tabs after it); true when the line ends here.
// An escaped escape character ends the line: `ENV C a\\` then `ENV D x` are two instructions
// (BuildKit's lineContinuationRegex `([^\\])\\[ \t]*$|^\\[ \t]*$`, testfile
// trailing-backslash). Like BuildKit, "foo \\\" (an escaped escape, then one) ends the line too.
bool trim_continuation(std::string& line, char escape) {
    std::size_t end = line.size();
    while (end > 0 && (line[end - 1] == ' ' || line[end - 1] == '\t')) --end;
    if (end > 0 && line[end - 1] == escape && (end == 1 || line[end - 2] != escape)) {
        line.erase(end - 1);
        return false;
    }
    return true;
}

// Leading --flags of an instruction (BuildKit's extractBuilderFlags): words starting with
// "--", with '...'/"..." quoting and backslash escapes; a bare "--" ends them.
std::vector<std::string> extract_flags(std::string_view line, std::string& rest) {
    std::vector<std::string> flags;
    std::size_t pos = 0;
    for (;;) {
        while (pos < line.size() && is_space(line[pos])) ++pos;
        if (pos + 1 >= line.size() || line[pos] != '-' || line[pos + 1] != '-') break;
        std::string word;
        char quote = 0;
        bool blank_ok = false;
        for (; pos < line.size(); ++pos) {
            char ch = line[pos];
            if (quote) {
                if (ch == quote) {
                    quote = 0;
                    continue;
                }
            } else if (is_space(ch)) {
                break;
            } else if (ch == '\'' || ch == '"') {
                quote = ch;
                blank_ok = true;
                continue;
            }
            if (ch == '\\') {
                if (pos + 1 == line.size()) continue;
                ch = line[++pos];
            }
            word += ch;
        }
        if (word == "--") {
            rest = std::string(trim(line.substr(pos)));
            return flags;
        }
        if (blank_ok || !word.empty()) flags.push_back(std::move(word));
    }
    rest = std::string(trim(line.substr(std::min(pos, line.size()))));
    return flags;
}

std::vector<std::string> split_whitespace(std::string_view s) {
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && is_ws(s[i])) ++i;
        std::size_t start = i;
        while (i < s.size() && !is_ws(s[i])) ++i;
        if (i > start) out.emplace_back(s.substr(start, i - start));
    }
    return out;
}

// BuildKit's parseWords: whitespace-separated words that keep their quotes and escapes (the
// shell lexer removes them later), so `a="b c"` stays one word.
std::vector<std::string> parse_words(std::string_view rest, char escape) {
    std::vector<std::string> words;
    std::string word;
    char quote = 0;
    bool in_word = false, blank_ok = false;
    for (std::size_t pos = 0; pos < rest.size(); ++pos) {
        char ch = rest[pos];
        if (!in_word) {
            if (is_space(ch)) continue;
            in_word = true;
        }
        if (!quote) {
            if (is_space(ch)) {
                if (blank_ok || !word.empty()) words.push_back(word);
                word.clear();
                in_word = blank_ok = false;
                continue;
            }
            if (ch == '\'' || ch == '"') {
                quote = ch;
                blank_ok = true;
            } else if (ch == escape) {
                if (pos + 1 == rest.size()) continue;
                word += ch;
                ch = rest[++pos];
            }
            word += ch;
            continue;
        }
        if (ch == quote) {
            quote = 0;
        } else if (ch == escape && quote != '\'') {
            if (pos + 1 == rest.size()) {
                quote = 0;
                continue;
            }
            word += ch;
            ch = rest[++pos];
        }
        word += ch;
    }
    if (in_word && (blank_ok || !word.empty())) words.push_back(word);
    return words;
}

struct JsonParse {
    bool is_json = false;
    std::vector<std::string> values;
};

// The exec form: a JSON array of strings. Not JSON at all -> not exec form (BuildKit then reads
// the line as shell form). A JSON array followed by more text is an error here, where BuildKit
// silently drops the text.
JsonParse parse_json_array(std::string_view rest, const std::string& file, int line,
                           const std::string& keyword) {
    rest = trim_left(rest);
    if (rest.empty() || rest.front() != '[') return {};
    // Nested too deep is not JSON to aishell (json_parse.hpp): the shell form, as BuildKit
    // reads a line its JSON parser refuses.
    if (oci::json_too_deep_at(rest)) return {};
    nlohmann::json parsed;
    std::size_t consumed = rest.size();
    try {
        parsed = nlohmann::json::parse(rest);
    } catch (const nlohmann::json::parse_error& e) {
        // Is it a valid array followed by other text? e.byte is 1 past the offending byte.
        if (e.byte < 2 || e.byte - 1 > rest.size()) return {};
        std::string_view prefix = rest.substr(0, e.byte - 1);
        auto retry = oci::parse_json(prefix);
        if (retry.is_discarded() || !retry.is_array()) return {};
        parsed = std::move(retry);
        consumed = prefix.size();
    }
    if (!parsed.is_array()) return {};
    if (!trim(rest.substr(consumed)).empty())
        fail_at(file, line, keyword + ": unexpected text after the JSON array: " + std::string(trim(rest.substr(consumed))),
                "the exec form is a JSON array and nothing else; remove the trailing text or use the shell form");
    JsonParse out{true, {}};
    for (const auto& v : parsed) {
        if (!v.is_string())
            fail_at(file, line, keyword + ": when using JSON array syntax, arrays must be comprised of strings only",
                    "quote every element: [\"echo\", \"1\"]");
        out.values.push_back(v.get<std::string>());
    }
    return out;
}

class NodeBuilder {
public:
    NodeBuilder(const std::string& file, char escape) : file_(file), escape_(escape) {}

    Node build(std::string_view line, int start, int end) {
        Node node;
        node.start_line = start;
        node.end_line = end;
        node.original = std::string(trim(line));
        std::string_view text = node.original;
        std::size_t ws = 0;
        while (ws < text.size() && !is_ws(text[ws])) ++ws;
        std::string cmd(text.substr(0, ws));
        std::string rest;
        if (ws < text.size()) node.flags = extract_flags(text.substr(ws), rest);
        node.keyword = upper(cmd);
        const auto& known = known_instructions();
        if (std::find(known.begin(), known.end(), node.keyword) == known.end()) {
            auto guess = suggest(node.keyword, known);
            fail_at(file_, start, "unknown instruction: " + cmd,
                    guess ? "did you mean " + *guess + "?" : "see the Dockerfile reference for the instructions");
        }
        split_args(node, rest);
        return node;
    }

private:
    void split_args(Node& node, const std::string& rest) {
        const std::string& k = node.keyword;
        if (k == "ENV" || k == "LABEL") return name_values(node, rest);
        if (k == "ARG") {
            node.args = parse_words(rest, escape_);
            return;
        }
        if (k == "FROM" || k == "EXPOSE") {
            node.args = split_whitespace(rest);
            return;
        }
        if (k == "RUN" || k == "CMD" || k == "ENTRYPOINT") return maybe_json(node, rest);
        if (k == "ADD" || k == "COPY" || k == "VOLUME") {
            auto json = parse_json_array(rest, file_, node.start_line, k);
            node.json = json.is_json;
            node.args = json.is_json ? json.values : split_whitespace(rest);
            return;
        }
        if (k == "SHELL") {
            auto json = parse_json_array(rest, file_, node.start_line, k);
            if (!json.is_json)
                fail_at(file_, node.start_line, "SHELL requires the arguments to be in JSON form",
                        "write it as SHELL [\"/bin/sh\", \"-c\"]");
            node.json = true;
            node.args = json.values;
            return;
        }
        if (k == "HEALTHCHECK") return health(node, rest);
        if (k == "ONBUILD") {
            if (!rest.empty()) node.next = std::make_shared<Node>(build(rest, node.start_line, node.end_line));
            return;
        }
        if (!rest.empty()) node.args.push_back(rest);  // USER WORKDIR STOPSIGNAL MAINTAINER
    }

    void maybe_json(Node& node, std::string_view rest) {
        if (rest.empty()) return;
        auto json = parse_json_array(rest, file_, node.start_line, node.keyword);
        node.json = json.is_json;
        if (json.is_json)
            node.args = json.values;
        else
            node.args.emplace_back(rest);
    }

    // ENV/LABEL: "KEY value" (old form, the whole rest is the value) or KEY=value pairs.
    void name_values(Node& node, const std::string& rest) {
        auto words = parse_words(rest, escape_);
        if (words.empty()) return;
        if (words[0].find('=') == std::string::npos) {
            std::size_t ws = 0;
            while (ws < rest.size() && !is_ws(rest[ws])) ++ws;
            std::string_view value = trim_left(std::string_view(rest).substr(ws));
            if (value.empty())
                fail_at(file_, node.start_line, node.keyword + " must have two arguments",
                        "write " + node.keyword + " " + words[0] + "=value");
            node.args = {rest.substr(0, ws), std::string(value), ""};
            return;
        }
        for (const auto& word : words) {
            auto eq = word.find('=');
            if (eq == std::string::npos)
                fail_at(file_, node.start_line,
                        "Syntax error - can't find = in \"" + word + "\". Must be of the form: name=value",
                        "quote values that contain spaces: " + node.keyword + " name=\"a b\"");
            node.args.push_back(word.substr(0, eq));
            node.args.push_back(word.substr(eq + 1));
            node.args.push_back("=");
        }
    }

    void health(Node& node, std::string_view rest) {
        std::size_t sep = 0;
        while (sep < rest.size() && !is_space(rest[sep])) ++sep;
        if (sep == 0) return;
        node.args.emplace_back(upper(rest.substr(0, sep)));
        std::string_view cmd = trim_left(rest.substr(sep));
        if (cmd.empty()) return;
        auto json = parse_json_array(cmd, file_, node.start_line, node.keyword);
        node.json = json.is_json;
        if (json.is_json)
            node.args.insert(node.args.end(), json.values.begin(), json.values.end());
        else
            node.args.emplace_back(cmd);
    }

    const std::string& file_;
    char escape_;
};

bool can_contain_heredoc(const Node& node) {
    const Node* n = &node;
    if (n->keyword == "ONBUILD" && n->next) n = n->next.get();
    return (n->keyword == "RUN" || n->keyword == "COPY" || n->keyword == "ADD") && !n->json;
}

// Heredoc openers on a line: its words (quotes and escapes kept) that read as <<WORD.
// A line the lexer cannot split (an unbalanced quote) has no heredocs, as in BuildKit, which
// ignores that error here; the shell reports the quote when the step runs.
std::vector<Heredoc> heredocs_in_line(std::string_view line) {
    if (line.find("<<") == std::string_view::npos) return {};
    LexOptions options{.raw_quotes = true, .raw_escapes = true, .skip_unset = true};
    std::vector<std::string> words;
    try {
        words = process(line, nullptr, options).words;
    } catch (const Error&) {
        return {};
    }
    std::vector<Heredoc> docs;
    for (const auto& word : words)
        if (auto doc = parse_heredoc_word(word)) docs.push_back(*doc);
    return docs;
}

std::string strip_leading_tabs(std::string_view s) {
    while (!s.empty() && s.front() == '\t') s.remove_prefix(1);
    return std::string(s);
}

}  // namespace

std::optional<Heredoc> parse_heredoc_word(std::string_view word) {
    // ^(\d*)<<(-?)([^<]*)$
    std::size_t digits = 0;
    while (digits < word.size() && std::isdigit(static_cast<unsigned char>(word[digits]))) ++digits;
    if (word.substr(digits, 2) != "<<") return std::nullopt;
    Heredoc doc;
    if (digits > 0) doc.fd = parse_number<unsigned>(
        word.substr(0, digits), {.what = "heredoc file descriptor", .hint = "the digits before << name a file descriptor, e.g. 3<<EOF"});
    std::string_view rest = word.substr(digits + 2);
    if (!rest.empty() && rest.front() == '-') {
        doc.chomp = true;
        rest.remove_prefix(1);
    }
    if (rest.empty() || rest.find('<') != std::string_view::npos) return std::nullopt;
    // Lex the delimiter with and without quotes: if the counts of quote characters differ,
    // part of it was quoted, and the body is not expanded (as in sh).
    LexOptions plain{.skip_unset = true};
    LexOptions raw{.raw_quotes = true, .skip_unset = true};
    std::vector<std::string> words, raw_words;
    try {
        words = process(rest, nullptr, plain).words;
        raw_words = process(rest, nullptr, raw).words;
    } catch (const Error&) {
        return std::nullopt;  // an unbalanced quote: not a heredoc word
    }
    if (words.size() != 1) return std::nullopt;
    auto quotes = [](const std::string& s) { return std::count(s.begin(), s.end(), '\'') + std::count(s.begin(), s.end(), '"'); };
    doc.name = words[0];
    doc.expand = raw_words.size() == 1 && quotes(words[0]) == quotes(raw_words[0]);
    return doc;
}

ParsedDockerfile parse_dockerfile_text(std::string_view text, const std::string& filename) {
    ParsedDockerfile out;
    out.filename = filename;
    auto lines = split_lines(text);
    DirectiveReader directives(out.directives, filename);
    std::size_t i = 0;
    while (i < lines.size()) {
        const int start = static_cast<int>(i) + 1;
        std::string_view raw = lines[i++];
        directives.line(raw, start);
        if (is_comment(raw)) continue;
        const char escape = out.directives.escape;
        std::string line(trim_left(raw));
        bool end = trim_continuation(line, escape);
        if (end && line.empty()) continue;
        while (!end && i < lines.size()) {
            std::string_view more = lines[i++];
            if (is_comment(more)) continue;
            if (trim(more).empty()) {
                out.warnings.push_back(filename + ":" + std::to_string(i) +
                                       ": empty continuation line (deprecated in Docker)");
                continue;
            }
            std::string part(more);
            end = trim_continuation(part, escape);
            line += part;
        }
        if (trim(line).empty()) continue;
        NodeBuilder builder(filename, escape);
        Node node = builder.build(line, start, static_cast<int>(i));
        if (can_contain_heredoc(node)) {
            Node& target = node.keyword == "ONBUILD" ? *node.next : node;
            const auto docs = with_context(filename + ":" + std::to_string(start), [&] { return heredocs_in_line(line); });
            for (Heredoc doc : docs) {
                bool terminated = false;
                while (i < lines.size()) {
                    std::string_view body = lines[i++];
                    std::string candidate = doc.chomp ? strip_leading_tabs(body) : std::string(body);
                    if (candidate == doc.name) {
                        terminated = true;
                        break;
                    }
                    doc.content += (doc.chomp ? candidate : std::string(body)) + "\n";
                }
                if (!terminated)
                    fail_at(filename, start, "unterminated heredoc <<" + doc.name,
                            "end it with a line containing only " + doc.name);
                target.heredocs.push_back(std::move(doc));
            }
            node.end_line = static_cast<int>(i);
            if (&target != &node) target.end_line = node.end_line;
        }
        out.nodes.push_back(std::move(node));
    }
    return out;
}

std::optional<std::string> suggest(std::string_view word, const std::vector<std::string>& candidates) {
    auto distance = [](std::string_view a, std::string_view b) {
        std::vector<std::size_t> row(b.size() + 1);
        for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
        for (std::size_t i = 1; i <= a.size(); ++i) {
            std::size_t diag = row[0];
            row[0] = i;
            for (std::size_t j = 1; j <= b.size(); ++j) {
                std::size_t up = row[j];
                bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                            std::tolower(static_cast<unsigned char>(b[j - 1]));
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (same ? 0 : 1)});
                diag = up;
            }
        }
        return row[b.size()];
    };
    std::optional<std::string> best;
    std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (const auto& c : candidates) {
        std::size_t d = distance(word, c);
        if (d < best_distance) {
            best_distance = d;
            best = c;
        }
    }
    return best;
}

}  // namespace aishell::composer
