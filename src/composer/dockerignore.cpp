// .dockerignore matching, following moby/patternmatcher (patternmatcher.go, ignorefile.go): read
// for behaviour, written afresh. A pattern is turned into one of four match kinds exactly as
// patternmatcher does (exact, "dir/**" prefix, "**/name" suffix, else a regular expression), so
// its quirks carry over: "**/" also matches zero directories, "*" and "?" never cross "/", a
// backslash escapes the next character, and the escaped character keeps its regexp meaning
// (patternmatcher hands "\d" to Go's regexp, where it is a digit class).
#include "composer/dockerignore.hpp"

#include <algorithm>
#include <regex>
#include <system_error>

#include "common/error.hpp"
#include "common/path_components.hpp"
#include "composer/dockerfile_parser.hpp"

namespace aishell::composer {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

// Go's path/filepath.Clean on Unix: collapse "//", drop "." elements, resolve ".." lexically
// (a rooted path cannot go above "/"), "" becomes ".".
std::string go_clean(std::string_view path) {
    if (path.empty()) return ".";
    const bool rooted = path.front() == '/';
    std::vector<std::string_view> parts;
    for (std::string_view part : PathComponents(path)) {
        if (part == ".") continue;
        if (part == "..") {
            if (!parts.empty() && parts.back() != "..") {
                parts.pop_back();
                continue;
            }
            if (rooted) continue;
        }
        parts.push_back(part);
    }
    std::string out = rooted ? "/" : "";
    for (std::size_t k = 0; k < parts.size(); ++k) {
        if (k) out += '/';
        out += parts[k];
    }
    return out.empty() ? "." : out;
}

// Decodes UTF-8 into code points for the regex (Go's regexp works on runes, so "?" matches one
// character, not one byte). An invalid byte becomes U+FFFD, as Go decodes it.
std::wstring widen(std::string_view s) {
    std::wstring out;
    for (std::size_t i = 0; i < s.size();) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > s.size()) {
            out += L'\uFFFD';
            ++i;
            continue;
        }
        char32_t cp = len == 1 ? c : c & (0xFF >> (len + 1));
        bool ok = true;
        for (int k = 1; k < len; ++k) {
            unsigned char cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) ok = false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (!ok) {
            out += L'\uFFFD';
            ++i;
            continue;
        }
        out += static_cast<wchar_t>(cp);
        i += len;
    }
    return out;
}

// filepath.Match's syntax check: "\" must escape something; "[...]" must close and hold at
// least one range; inside it "-" and "]" cannot start a range, and a range end must exist.
bool valid_glob(std::wstring_view p) {
    std::size_t i = 0;
    auto get_esc = [&](std::size_t& k) {
        if (k >= p.size() || p[k] == L'-' || p[k] == L']') return false;
        if (p[k] == L'\\' && ++k >= p.size()) return false;
        ++k;
        return k < p.size();  // a class can never end right after a range char
    };
    while (i < p.size()) {
        wchar_t c = p[i];
        if (c == L'\\') {
            if (i + 1 >= p.size()) return false;
            i += 2;
        } else if (c == L'[') {
            std::size_t k = i + 1;
            if (k < p.size() && p[k] == L'^') ++k;
            int ranges = 0;
            for (;;) {
                if (k < p.size() && p[k] == L']' && ranges > 0) {
                    ++k;
                    break;
                }
                if (!get_esc(k)) return false;
                if (p[k] == L'-') {
                    ++k;
                    if (!get_esc(k)) return false;
                }
                ++ranges;
            }
            i = k;
        } else {
            ++i;
        }
    }
    return true;
}

bool is_regex_meta(wchar_t c) {
    static constexpr std::wstring_view metas = L".+()|{}$";
    return metas.find(c) != std::wstring_view::npos;
}

}  // namespace

enum class MatchKind { Exact, Prefix, Suffix, Regexp };

// The escape at p[i] ("\" then a digit) as Go's regexp reads it (regexp/syntax parseEscape):
// "\0" and "\1".."\7" followed by an octal digit are an octal character code of up to three
// digits; a lone "\1".."\9" would be a backreference, which Go does not have: an error. Returns
// the character for std::regex ("\uXXXX") and leaves i on the last digit. std::regex would read
// "\NNN" as a backreference, and libstdc++ overflows an int reading a long one (found by
// tests/fuzz, dockerignore target).
std::wstring octal_escape(const std::wstring& p, std::size_t& i, const std::string& pattern) {
    auto octal = [&](std::size_t k) { return k < p.size() && p[k] >= L'0' && p[k] <= L'7'; };
    wchar_t first = p[i + 1];
    if (first == L'8' || first == L'9' || (first != L'0' && !octal(i + 2)))
        throw Error(".dockerignore: syntax error in pattern: " + pattern,
                    "a backslash before a digit starts an octal code (\\101 is A) or is invalid");
    unsigned value = 0;
    std::size_t k = i + 1;
    for (int digits = 0; digits < 3 && octal(k); ++digits, ++k) value = value * 8 + static_cast<unsigned>(p[k] - L'0');
    i = k - 1;
    static constexpr wchar_t kHex[] = L"0123456789abcdef";
    return {L'\\', L'u', kHex[(value >> 12) & 15], kHex[(value >> 8) & 15], kHex[(value >> 4) & 15], kHex[value & 15]};
}

struct IgnoreMatcher::Pattern {
    bool exception = false;
    std::string cleaned;
    MatchKind kind = MatchKind::Exact;
    std::wregex regex;

    // A pattern is matched against paths in the context, none longer than PATH_MAX; a longer
    // pattern is refused before it reaches std::regex, whose compiler and matcher recurse per
    // character (a 600 KB line overflowed the stack; scripts/fuzz's dockerignore target).
    static constexpr std::size_t kMaxPatternBytes = 4096;

    // "*" at p[i] (i moves past a "**" and its "/"): "[^/]*", or "**" as any number of
    // directories, a prefix at the end, a suffix at the start.
    void star(const std::wstring& p, std::size_t& i, std::wstring& re) {
        if (i + 1 < p.size() && p[i + 1] == L'*') {
            const bool first = i == 0;
            ++i;
            if (i + 1 < p.size() && p[i + 1] == L'/') ++i;  // "**/" reads as "**"
            if (i + 1 >= p.size()) {
                // "**" at the end matches everything below (as .gitignore does).
                if (kind == MatchKind::Exact) {
                    kind = MatchKind::Prefix;
                } else {
                    re += L".*";
                    kind = MatchKind::Regexp;
                }
            } else {
                re += L"(.*/)?";  // any number of directories, even none
                kind = MatchKind::Regexp;
            }
            if (first) kind = MatchKind::Suffix;
        } else {
            re += L"[^/]*";
            kind = MatchKind::Regexp;
        }
    }

    // "\\" at p[i]: an octal escape, the next character taken literally, or a trailing "\\"
    // matched as itself; i moves past what it consumed.
    void backslash(const std::wstring& p, std::size_t& i, std::wstring& re) {
        if (i + 1 >= p.size()) {
            re += L"\\\\";
            return;
        }
        if (p[i + 1] >= L'0' && p[i + 1] <= L'9') {
            re += octal_escape(p, i, cleaned);
            kind = MatchKind::Regexp;
            return;
        }
        re += L'\\';
        re += p[++i];
        kind = MatchKind::Regexp;
    }

    void compile() {
        if (cleaned.size() > kMaxPatternBytes)
            throw Error(".dockerignore: a pattern of " + std::to_string(cleaned.size()) + " bytes (" + shown() +
                            "); at most " + std::to_string(kMaxPatternBytes) + " are read",
                        "a path in the build context is never longer than PATH_MAX (4096 bytes)");
        std::wstring p = widen(cleaned);
        std::wstring re = L"^";
        kind = MatchKind::Exact;
        for (std::size_t i = 0; i < p.size(); ++i) {
            wchar_t c = p[i];
            if (c == L'*') {
                star(p, i, re);
            } else if (c == L'?') {
                re += L"[^/]";
                kind = MatchKind::Regexp;
            } else if (is_regex_meta(c)) {
                re += L'\\';
                re += c;
            } else if (c == L'\\') {
                backslash(p, i, re);
            } else if (c == L'[' || c == L']') {
                re += c;
                kind = MatchKind::Regexp;
            } else {
                re += c;
            }
        }
        if (kind != MatchKind::Regexp) return;
        re += L"$";
        try {
            regex = std::wregex(re, std::regex::ECMAScript);
        } catch (const std::regex_error&) {
            throw Error(".dockerignore: syntax error in pattern: " + shown(), "see Go's filepath.Match syntax");
        }
    }

    // The pattern for an error line: its start when it is long.
    std::string shown() const { return cleaned.size() <= 80 ? cleaned : cleaned.substr(0, 80) + "..."; }

    bool match(std::string_view path) const {
        switch (kind) {
            case MatchKind::Exact: return path == cleaned;
            case MatchKind::Prefix:
                return path.substr(0, cleaned.size() - 2) == std::string_view(cleaned).substr(0, cleaned.size() - 2);
            case MatchKind::Suffix: {
                std::string_view suffix = std::string_view(cleaned).substr(2);
                if (path.size() >= suffix.size() && path.substr(path.size() - suffix.size()) == suffix) return true;
                return !suffix.empty() && suffix.front() == '/' && path == suffix.substr(1);  // "**/foo" matches "foo"
            }
            case MatchKind::Regexp: return std::regex_match(widen(path), regex);
        }
        return false;
    }
};

std::vector<std::string> read_dockerignore(std::string_view text, const std::string& filename) {
    std::vector<std::string> patterns;
    std::size_t start = 0;
    int lineno = 0;
    while (start <= text.size()) {
        std::size_t nl = text.find('\n', start);
        std::size_t end = nl == std::string_view::npos ? text.size() : nl;
        std::string_view line = text.substr(start, end - start);
        start = end + 1;
        if (++lineno == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
        if (nl == std::string_view::npos && line.empty()) break;
        if (!line.empty() && line.front() == '#') continue;  // a comment only in column 1
        std::string_view pattern = trim(line);
        if (pattern.empty()) continue;
        const bool exception = pattern.front() == '!';
        if (exception) pattern = trim(pattern.substr(1));
        std::string cleaned;
        if (!pattern.empty()) {
            cleaned = go_clean(pattern);
            if (cleaned.size() > 1 && cleaned.front() == '/') cleaned.erase(0, 1);
        }
        if (exception) cleaned = "!" + cleaned;
        try {
            IgnoreMatcher check({cleaned});
        } catch (Error& e) {
            fail_at(filename, lineno, e.message(), e.hint());
        }
        patterns.push_back(std::move(cleaned));
    }
    return patterns;
}

IgnoreMatcher::IgnoreMatcher(const std::vector<std::string>& patterns) {
    for (const auto& raw : patterns) {
        std::string_view trimmed = trim(raw);
        if (trimmed.empty()) continue;
        auto p = std::make_unique<Pattern>();
        std::string cleaned = go_clean(trimmed);
        if (cleaned.front() == '!') {
            if (cleaned.size() == 1)
                throw Error("illegal exclusion pattern: \"!\"", "write !PATH to re-include PATH");
            p->exception = true;
            has_exceptions_ = true;
            cleaned.erase(0, 1);
        }
        if (!valid_glob(widen(cleaned)))
            throw Error("syntax error in pattern: " + cleaned,
                        "patterns use Go's filepath.Match syntax: * ? [a-z] [^a-z] \\x, plus **");
        p->cleaned = std::move(cleaned);
        p->compile();
        patterns_.push_back(std::move(p));
    }
}

IgnoreMatcher::IgnoreMatcher(IgnoreMatcher&&) noexcept = default;
IgnoreMatcher& IgnoreMatcher::operator=(IgnoreMatcher&&) noexcept = default;
IgnoreMatcher::~IgnoreMatcher() = default;

bool IgnoreMatcher::excluded(std::string_view raw_path) const {
    const std::string path = go_clean(raw_path);
    if (path == ".") return false;  // never exclude the whole context
    // The parent directories of path, shallowest first: "a", "a/b" for "a/b/c".
    std::vector<std::string_view> parents;
    for (std::size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1))
        if (slash > 0) parents.push_back(std::string_view(path).substr(0, slash));
    bool matched = false;
    for (const auto& pattern : patterns_) {
        // An exception can only flip a match, an exclusion only a non-match.
        if (pattern->exception != matched) continue;
        bool match = pattern->match(path);
        for (std::size_t i = 0; !match && i < parents.size(); ++i) match = pattern->match(parents[i]);
        if (match) matched = !pattern->exception;
    }
    return matched;
}

std::optional<std::filesystem::path> find_dockerignore(const std::filesystem::path& context,
                                                       const std::filesystem::path& dockerfile) {
    std::error_code ec;
    if (!dockerfile.empty()) {
        std::filesystem::path beside = dockerfile;
        beside += ".dockerignore";
        if (std::filesystem::is_regular_file(beside, ec)) return beside;
    }
    std::filesystem::path in_context = context / ".dockerignore";
    if (std::filesystem::is_regular_file(in_context, ec)) return in_context;
    return std::nullopt;
}

namespace {

void walk_dir(const std::filesystem::path& root, const std::string& rel, const IgnoreMatcher& matcher,
              std::vector<std::string>& out) {
    std::error_code ec;
    std::filesystem::directory_iterator it(rel.empty() ? root : root / rel, ec);
    if (ec) throw SystemError(ec.value(), "read directory", (root / rel).string());
    for (const auto& entry : it) {
        std::string name = entry.path().filename().string();
        std::string path = rel.empty() ? name : rel + "/" + name;
        const bool excluded = matcher.excluded(path);
        const bool is_dir = entry.symlink_status(ec).type() == std::filesystem::file_type::directory;
        if (!is_dir) {
            if (!excluded) out.push_back(path);
            continue;
        }
        // With no exceptions nothing below an excluded directory can come back.
        if (excluded && !matcher.has_exceptions()) continue;
        std::vector<std::string> below;
        walk_dir(root, path, matcher, below);
        if (!excluded || !below.empty()) out.push_back(path);
        out.insert(out.end(), std::make_move_iterator(below.begin()), std::make_move_iterator(below.end()));
    }
}

}  // namespace

std::vector<std::string> walk_context(const std::filesystem::path& context, const IgnoreMatcher& matcher) {
    std::vector<std::string> out;
    walk_dir(context, "", matcher, out);
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace aishell::composer
