// The word lexer behind Dockerfile variable substitution. It follows BuildKit's
// frontend/dockerfile/shell/lex.go rule for rule (read, not copied), including its quirks:
// "" alone yields no word, an escape character at the very end is dropped, "$" followed by a
// non-name character is a literal "$", and a name starting with a digit is read as all digits.
#include "composer/shell_lex.hpp"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "common/error.hpp"

namespace aishell::composer {

EnvLookup env_from_map(const std::map<std::string, std::string>& env) {
    return [&env](const std::string& name) -> std::optional<std::string> {
        auto it = env.find(name);
        if (it == env.end()) return std::nullopt;
        return it->second;
    };
}

namespace {

constexpr int kEof = -1;

bool is_space(int ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\v' || ch == '\f' || ch == '\r';
}
bool is_digit(int ch) { return ch >= '0' && ch <= '9'; }
bool is_name_char(int ch) {
    return is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}
// POSIX special parameters ($@ $* $# $? $- $$ $! $0): BuildKit reads them as one-char names.
bool is_special_param(int ch) {
    return ch == '@' || ch == '*' || ch == '#' || ch == '?' || ch == '-' || ch == '$' || ch == '!' ||
           ch == '0';
}

// Accumulates the words of a process_words result: characters that came from unquoted text or
// from an expansion split on whitespace; quoted text and escaped characters never do.
class Words {
public:
    void add_char(char ch) {
        if (is_space(static_cast<unsigned char>(ch))) {
            if (in_word_ && !word_.empty()) {
                words_.push_back(std::move(word_));
                word_.clear();
                in_word_ = false;
            }
            return;
        }
        add_raw_char(ch);
    }
    void add_raw_char(char ch) {
        word_ += ch;
        in_word_ = true;
    }
    void add_string(std::string_view s) {
        for (char ch : s) add_char(ch);
    }
    void add_raw_string(std::string_view s) {
        word_ += s;
        in_word_ = true;
    }
    std::vector<std::string> take() {
        if (!word_.empty()) words_.push_back(std::move(word_));
        word_.clear();
        in_word_ = false;
        return std::move(words_);
    }

private:
    std::string word_;
    std::vector<std::string> words_;
    bool in_word_ = false;
};

class Lexer {
public:
    Lexer(std::string_view input, const EnvLookup& env, const LexOptions& options, LexResult& result)
        : in_(input), env_(env), opt_(options), result_(result) {}

    // Reads up to stop (consumed) or the end when stop is kEof. Returns the text and, through
    // words, its whitespace split.
    std::string process_until(int stop, bool raw_escapes, std::vector<std::string>* words_out) {
        std::string out;
        Words words;
        bool saved_raw = raw_escapes_;
        raw_escapes_ = raw_escapes || opt_.raw_escapes;
        while (peek() != kEof) {
            int ch = peek();
            if (stop != kEof && ch == stop) {
                next();
                raw_escapes_ = saved_raw;
                if (words_out) *words_out = words.take();
                return out;
            }
            if (ch == '$') {
                std::string value = dollar();
                out += value;
                words.add_string(value);
            } else if (ch == '\'' && !opt_.skip_quotes) {
                std::string value = single_quote();
                out += value;
                words.add_raw_string(value);
            } else if (ch == '"' && !opt_.skip_quotes) {
                std::string value = double_quote();
                out += value;
                words.add_raw_string(value);
            } else {
                next();
                if (ch == opt_.escape) {
                    if (raw_escapes_) {
                        words.add_raw_char(static_cast<char>(ch));
                        out += static_cast<char>(ch);
                    }
                    ch = next();
                    if (ch == kEof) break;  // an escape at the very end is dropped
                    words.add_raw_char(static_cast<char>(ch));
                } else {
                    words.add_char(static_cast<char>(ch));
                }
                out += static_cast<char>(ch);
            }
        }
        raw_escapes_ = saved_raw;
        if (stop != kEof) {
            throw Error(std::string("unexpected end of statement while looking for matching ") +
                        static_cast<char>(stop));
        }
        if (words_out) *words_out = words.take();
        return out;
    }

private:
    int peek() const { return pos_ < in_.size() ? static_cast<unsigned char>(in_[pos_]) : kEof; }
    int next() { return pos_ < in_.size() ? static_cast<unsigned char>(in_[pos_++]) : kEof; }

    std::optional<std::string> lookup(const std::string& name) {
        auto value = env_ ? env_(name) : std::nullopt;
        (value ? result_.matched : result_.unmatched).insert(name);
        return value;
    }

    // '...': everything literal up to the next ', which cannot be escaped (as in sh).
    std::string single_quote() {
        std::string out;
        int ch = next();
        if (opt_.raw_quotes) out += static_cast<char>(ch);
        for (;;) {
            ch = next();
            if (ch == kEof) throw Error("unexpected end of statement while looking for matching single-quote");
            if (ch == '\'') {
                if (opt_.raw_quotes) out += '\'';
                return out;
            }
            out += static_cast<char>(ch);
        }
    }

    // "...": $ expands; the escape character quotes only " $ and itself, else stays literal.
    std::string double_quote() {
        std::string out;
        int ch = next();
        if (opt_.raw_quotes) out += static_cast<char>(ch);
        for (;;) {
            int p = peek();
            if (p == kEof) throw Error("unexpected end of statement while looking for matching double-quote");
            if (p == '"') {
                next();
                if (opt_.raw_quotes) out += '"';
                return out;
            }
            if (p == '$') {
                out += dollar();
                continue;
            }
            ch = next();
            if (ch == opt_.escape) {
                int after = peek();
                if (after == kEof) continue;  // dropped at the end of the word
                if (after == '"' || after == '$' || after == opt_.escape) {
                    if (raw_escapes_) out += static_cast<char>(ch);
                    ch = next();
                }
            }
            out += static_cast<char>(ch);
        }
    }

    std::string name() {
        std::string out;
        while (peek() != kEof) {
            int ch = peek();
            if (out.empty() && is_digit(ch)) {
                while (is_digit(peek())) out += static_cast<char>(next());
                return out;
            }
            if (out.empty() && is_special_param(ch)) return std::string(1, static_cast<char>(next()));
            if (!is_name_char(ch)) break;
            out += static_cast<char>(next());
        }
        return out;
    }

    std::string dollar() {
        next();  // '$'
        if (peek() != '{') {
            std::string n = name();
            if (n.empty()) return "$";
            auto value = lookup(n);
            if (!value && opt_.skip_unset) return "$" + n;
            return value.value_or("");
        }
        next();  // '{'
        int first = peek();
        if (first == kEof) throw Error("syntax error: missing '}'");
        if (first == '{' || first == '}' || first == ':') throw Error("syntax error: bad substitution");
        std::string n = name();
        int ch = next();
        std::string modifier(1, static_cast<char>(ch));
        if (ch == kEof) throw Error("syntax error: missing '}'");
        if (ch == '}') {
            auto value = lookup(n);
            if (!value && opt_.skip_unset) return "${" + n + "}";
            return value.value_or("");
        }
        if (ch == '/') return replace(n);
        bool null_is_unset = false;
        if (ch == ':') {
            null_is_unset = true;
            ch = next();
            if (ch == kEof) throw Error("syntax error: missing '}'");
            modifier += static_cast<char>(ch);
        }
        bool pattern_op = ch == '#' || ch == '%';
        if ((ch != '+' && ch != '-' && ch != '?' && !pattern_op) || (null_is_unset && pattern_op))
            throw Error("unsupported modifier (" + modifier + ") in substitution");
        std::string word = word_until_brace(pattern_op);
        auto value = lookup(n);
        if (!value && opt_.skip_unset) return "${" + n + modifier + word + "}";
        bool unset = !value || (null_is_unset && value->empty());
        switch (ch) {
            case '-': return unset ? word : *value;
            case '+': return unset ? std::string() : word;
            case '?':
                if (!value) throw Error(n + ": " + (word.empty() ? "is not allowed to be unset" : word));
                if (null_is_unset && value->empty())
                    throw Error(n + ": " + (word.empty() ? "is not allowed to be empty" : word));
                return *value;
            default: return trim_pattern(static_cast<char>(ch), word, value.value_or(""));
        }
    }

    std::string word_until_brace(bool raw_escapes) {
        try {
            return process_until('}', raw_escapes, nullptr);
        } catch (const Error&) {
            if (peek() == kEof) throw Error("syntax error: missing '}'");
            throw;
        }
    }

    // ${V#p} ${V##p} (prefix) and ${V%p} ${V%%p} (suffix): shortest match, or longest when the
    // operator is doubled. BuildKit's patterns: * is any string (also "/"), ? any character,
    // \ escapes only * ? and \ (and drops before } and /), brackets are literal.
    static std::string trim_pattern(char op, std::string pattern, const std::string& value) {
        bool greedy = !pattern.empty() && pattern[0] == op;
        if (greedy) pattern.erase(0, 1);
        if (op == '#') return trim_prefix(pattern, value, greedy);
        // The shortest rightmost match, found as the leftmost match of both reversed.
        return reverse_utf8(trim_prefix(reverse_pattern(pattern), reverse_utf8(value), greedy));
    }

    static std::string trim_prefix(const std::string& pattern, const std::string& value, bool greedy) {
        PatternMatcher matcher(parse_shell_pattern(pattern), value, greedy);
        if (auto end = matcher.match_at(0)) return value.substr(*end);
        return value;
    }

    // A pattern element: a byte, `?` (any byte but a newline) or `*` (any run of them: Go's
    // "." stops at a newline only, and BuildKit turns * into ".*").
    struct PatternElem {
        enum Kind { Byte, AnyByte, Star } kind;
        char byte = 0;
    };

    static std::vector<PatternElem> parse_shell_pattern(const std::string& pattern) {
        std::vector<PatternElem> out;
        for (std::size_t i = 0; i < pattern.size(); ++i) {
            char c = pattern[i];
            if (c == '*') {
                if (out.empty() || out.back().kind != PatternElem::Star) out.push_back({PatternElem::Star});
            } else if (c == '?') {
                out.push_back({PatternElem::AnyByte});
            } else if (c == '\\') {
                if (i + 1 < pattern.size() && (pattern[i + 1] == '}' || pattern[i + 1] == '/')) continue;
                char next = i + 1 < pattern.size() ? pattern[++i] : '\0';
                if (next != '*' && next != '?' && next != '\\')
                    throw Error("invalid pattern (" + pattern + ") in substitution: invalid escape '\\" +
                                std::string(1, next) + "'");
                out.push_back({PatternElem::Byte, next});
            } else {
                out.push_back({PatternElem::Byte, c});  // brackets and the rest are literal
            }
        }
        return out;
    }

    // Matches a shell pattern at a position of a value with the preference order of BuildKit's
    // Go regexp (leftmost-first: a greedy star tries its longest run first, a lazy one its
    // shortest), so the match found is the one BuildKit finds. Not std::regex: libstdc++'s
    // compiler recurses once per pattern element and its executor once per character, so a long
    // pattern or value overflowed the stack (found by tests/fuzz, shell_lex target), and its
    // backtracking was exponential in the stars. This is a depth-first search with an explicit
    // stack and a memo of (element, position) states known to fail, which a state does whatever
    // path reached it: at most (elements + 1) x (value + 1) states are ever expanded.
    class PatternMatcher {
    public:
        PatternMatcher(std::vector<PatternElem> elems, const std::string& value, bool greedy)
            : elems_(std::move(elems)), value_(value), greedy_(greedy) {
            const std::size_t states = (elems_.size() + 1) * (value_.size() + 1);
            if (states > kMaxStates)
                throw Error("pattern and value too long to match (" + std::to_string(elems_.size()) + " pattern elements, " +
                            std::to_string(value_.size()) + " bytes of value)");
            failed_.assign(states, false);
        }

        // The end of the preferred match starting at pos, if any.
        std::optional<std::size_t> match_at(std::size_t pos) {
            std::vector<Frame> stack{frame(0, pos)};
            while (!stack.empty()) {
                Frame& f = stack.back();
                if (f.elem == elems_.size()) return f.pos;
                if (f.tried == f.choices || failed_[index(f.elem, f.pos)]) {
                    failed_[index(f.elem, f.pos)] = true;
                    stack.pop_back();
                    continue;
                }
                std::size_t advance = step_length(f);
                ++f.tried;
                stack.push_back(frame(f.elem + 1, f.pos + advance));
            }
            return std::nullopt;
        }

        // The leftmost match at or after from: {start, end}.
        std::optional<std::pair<std::size_t, std::size_t>> find(std::size_t from) {
            for (std::size_t start = from; start <= value_.size(); ++start)
                if (auto end = match_at(start)) return std::make_pair(start, *end);
            return std::nullopt;
        }

    private:
        static constexpr std::size_t kMaxStates = std::size_t{1} << 26;  // 8 MiB of memo bits

        struct Frame {
            std::size_t elem, pos, choices, tried;
        };

        std::size_t index(std::size_t elem, std::size_t pos) const { return elem * (value_.size() + 1) + pos; }

        // How many ways element elem can consume input at pos (a star: any run up to a newline).
        Frame frame(std::size_t elem, std::size_t pos) const {
            if (elem == elems_.size()) return {elem, pos, 0, 0};
            const PatternElem& e = elems_[elem];
            const bool more = pos < value_.size();
            switch (e.kind) {
                case PatternElem::Byte: return {elem, pos, more && value_[pos] == e.byte ? 1u : 0u, 0};
                case PatternElem::AnyByte: return {elem, pos, more && value_[pos] != '\n' ? 1u : 0u, 0};
                case PatternElem::Star: break;
            }
            std::size_t run = value_.find('\n', pos);
            run = (run == std::string::npos ? value_.size() : run) - pos;
            return {elem, pos, run + 1, 0};
        }

        // The bytes the next choice of f consumes.
        std::size_t step_length(const Frame& f) const {
            if (elems_[f.elem].kind != PatternElem::Star) return 1;
            return greedy_ ? f.choices - 1 - f.tried : f.tried;
        }

        std::vector<PatternElem> elems_;
        const std::string& value_;
        bool greedy_;
        std::vector<bool> failed_;
    };

    // Reverses a pattern by characters, keeping each escape before the character it escapes.
    static std::string reverse_pattern(const std::string& pattern) {
        std::vector<std::string> units;
        for (std::size_t i = 0; i < pattern.size();) {
            std::size_t len = utf8_len(pattern, i);
            if (pattern[i] == '\\' && i + 1 < pattern.size()) len = 1 + utf8_len(pattern, i + 1);
            units.push_back(pattern.substr(i, len));
            i += len;
        }
        std::reverse(units.begin(), units.end());
        std::string out;
        for (const auto& u : units) out += u;
        return out;
    }

    static std::string reverse_utf8(const std::string& s) {
        std::string out;
        for (std::size_t i = 0; i < s.size();) {
            std::size_t len = utf8_len(s, i);
            out.insert(0, s.substr(i, len));
            i += len;
        }
        return out;
    }

    static std::size_t utf8_len(const std::string& s, std::size_t i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        std::size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        return std::min(len, s.size() - i);
    }

    // ${V/p/r} replaces the first (leftmost) match of p, ${V//p/r} every match; * is greedy.
    std::string replace(const std::string& n) {
        bool all = peek() == '/';
        if (all) next();
        std::string pattern;
        try {
            pattern = process_until('/', true, nullptr);
        } catch (const Error&) {
            if (peek() == kEof) throw Error("syntax error: missing '/' in ${}");
            throw;
        }
        std::string replacement = word_until_brace(true);
        auto value = lookup(n);
        if (!value && opt_.skip_unset) return "${" + n + "/" + pattern + "/" + replacement + "}";
        const std::string v = value.value_or("");
        PatternMatcher matcher(parse_shell_pattern(pattern), v, true);
        if (all) return replace_all(matcher, v, replacement);
        auto m = matcher.find(0);
        if (!m) return v;
        return v.substr(0, m->first) + replacement + v.substr(m->second);
    }

    // Every non-overlapping match replaced, as Go's Regexp.ReplaceAllString walks them (an empty
    // match right after a previous match is not replaced; the search moves on by one byte after
    // an empty match). The replacement is literal text.
    static std::string replace_all(PatternMatcher& matcher, const std::string& v, const std::string& replacement) {
        std::string out;
        std::size_t last_end = 0, search = 0;
        bool first = true;
        while (search <= v.size()) {
            auto m = matcher.find(search);
            if (!m) break;
            out.append(v, last_end, m->first - last_end);
            if (m->second > last_end || (first && m->first == 0)) out += replacement;
            first = false;
            last_end = m->second;
            search = search + 1 > m->second ? search + 1 : m->second;
        }
        if (last_end < v.size()) out.append(v, last_end, std::string::npos);
        return out;
    }

    std::string_view in_;
    std::size_t pos_ = 0;
    const EnvLookup& env_;
    const LexOptions& opt_;
    LexResult& result_;
    bool raw_escapes_ = false;
};

}  // namespace

LexResult process(std::string_view input, const EnvLookup& env, const LexOptions& options) {
    LexResult result;
    Lexer lexer(input, env, options, result);
    result.word = lexer.process_until(kEof, false, &result.words);
    return result;
}

}  // namespace aishell::composer
