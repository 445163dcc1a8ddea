// Variable substitution in Dockerfile words (composer/shell_lex), checked against the rules of
// BuildKit's frontend/dockerfile/shell lexer: set vs unset vs empty, quotes, escapes, splitting.
#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "composer/shell_lex.hpp"

using namespace aishell;
using namespace aishell::composer;

namespace {

const std::map<std::string, std::string>& test_env() {
    static const std::map<std::string, std::string> env = {
        {"V", "val"}, {"EMPTY", ""}, {"SP", "b c"}, {"PATH_", "/usr/local/bin"}, {"F", "archive.tar.gz"}};
    return env;
}

std::string word(const std::string& in, char escape = '\\') { return process_word(in, env_from_map(test_env()), escape); }
std::vector<std::string> words(const std::string& in) { return process_words(in, env_from_map(test_env())); }

}  // namespace

TEST_CASE("lex: plain and braced references", "[shell_lex]") {
    CHECK(word("$V") == "val");
    CHECK(word("${V}") == "val");
    CHECK(word("a${V}b") == "avalb");
    CHECK(word("$Vx") == "");  // the name is Vx, which is unset
    CHECK(word("${UNSET}") == "");
    CHECK(word("$") == "$");
    CHECK(word("a$/b") == "a$/b");  // $ before a non-name character is literal
}

TEST_CASE("lex: default and alternative modifiers distinguish unset from empty", "[shell_lex]") {
    CHECK(word("${UNSET:-w}") == "w");
    CHECK(word("${EMPTY:-w}") == "w");
    CHECK(word("${V:-w}") == "val");
    CHECK(word("${UNSET-w}") == "w");
    CHECK(word("${EMPTY-w}") == "");
    CHECK(word("${V:+w}") == "w");
    CHECK(word("${EMPTY:+w}") == "");
    CHECK(word("${UNSET:+w}") == "");
    CHECK(word("${EMPTY+w}") == "w");
    CHECK(word("${UNSET+w}") == "");
    CHECK(word("${UNSET:-$V}") == "val");  // the word itself expands
    CHECK(word("${UNSET:-a b}") == "a b");
}

TEST_CASE("lex: required variables and syntax errors throw", "[shell_lex]") {
    CHECK_THROWS_WITH(word("${UNSET:?must be set}"), "UNSET: must be set");
    CHECK_THROWS_WITH(word("${UNSET?}"), "UNSET: is not allowed to be unset");
    CHECK_THROWS_WITH(word("${EMPTY:?}"), "EMPTY: is not allowed to be empty");
    CHECK(word("${EMPTY?}") == "");
    CHECK_THROWS_WITH(word("${V"), Catch::Contains("missing '}'"));
    CHECK_THROWS_WITH(word("${}"), Catch::Contains("bad substitution"));
    CHECK_THROWS_WITH(word("${V:=x}"), Catch::Contains("unsupported modifier"));
    CHECK_THROWS_WITH(word("'abc"), Catch::Contains("single-quote"));
    CHECK_THROWS_WITH(word("\"abc"), Catch::Contains("double-quote"));
}

TEST_CASE("lex: quotes and escapes", "[shell_lex]") {
    CHECK(word("'$V'") == "$V");
    CHECK(word("\"$V\"") == "val");
    CHECK(word("\\$V") == "$V");
    CHECK(word("\"\\$V\"") == "$V");
    CHECK(word("\"a\\b\"") == "a\\b");  // inside "..." the escape only quotes " $ and itself
    CHECK(word("\"a\\\\b\"") == "a\\b");
    CHECK(word("a\\ b") == "a b");
    CHECK(word("'it''s'") == "its");
    CHECK(word("\"it's\"") == "it's");
    CHECK(word("abc\\") == "abc");  // a trailing escape is dropped
}

TEST_CASE("lex: the backtick escape of '# escape=`'", "[shell_lex]") {
    CHECK(word("`$V", '`') == "$V");
    CHECK(word("C:\\path\\$V", '`') == "C:\\path\\val");
    CHECK(word("\"`\"\"", '`') == "\"");
}

TEST_CASE("lex: pattern removal and replacement", "[shell_lex]") {
    CHECK(word("${F#*.}") == "tar.gz");
    CHECK(word("${F##*.}") == "gz");
    CHECK(word("${F%.*}") == "archive.tar");
    CHECK(word("${F%%.*}") == "archive");
    CHECK(word("${PATH_/local/opt}") == "/usr/opt/bin");
    CHECK(word("${F//a/A}") == "Archive.tAr.gz");
}

TEST_CASE("lex: word splitting keeps quoted text whole and splits expansions", "[shell_lex]") {
    CHECK(words("a $SP") == std::vector<std::string>{"a", "b", "c"});
    CHECK(words("a \"$SP\"") == std::vector<std::string>{"a", "b c"});
    CHECK(words("a\\ b c") == std::vector<std::string>{"a b", "c"});
    CHECK(words("  x   y ") == std::vector<std::string>{"x", "y"});
    CHECK(words("'' x") == std::vector<std::string>{"x"});  // BuildKit: an empty word is dropped
}

TEST_CASE("lex: matched and unmatched variable names are reported", "[shell_lex]") {
    auto r = process("$V ${UNSET:-x} $EMPTY", env_from_map(test_env()));
    CHECK(r.matched == std::set<std::string>{"V", "EMPTY"});
    CHECK(r.unmatched == std::set<std::string>{"UNSET"});
}

TEST_CASE("lex: skip_unset leaves unknown references as written", "[shell_lex]") {
    LexOptions o{.skip_unset = true};
    CHECK(process("$V-$NOPE-${NOPE2}", env_from_map(test_env()), o).word == "val-$NOPE-${NOPE2}");
}

TEST_CASE("lex: BuildKit's substitution patterns: * crosses '/', brackets are literal", "[shell_lex]") {
    std::map<std::string, std::string> env = {{"P", "/usr/local/bin"}, {"B", "banana"}, {"K", "[a]x"}};
    auto w = [&](const std::string& in) { return process_word(in, env_from_map(env)); };
    CHECK(w("${P#*/}") == "usr/local/bin");
    CHECK(w("${P##*/}") == "bin");
    CHECK(w("${P%/*}") == "/usr/local");
    CHECK(w("${P%%/*}") == "");
    CHECK(w("${B/a*/X}") == "bX");  // leftmost match, * greedy
    CHECK(w("${B//an/AN}") == "bANANa");
    CHECK(w("${B/?/_}") == "_anana");
    CHECK(w("${K#[a]}") == "x");  // [a] is the three characters, not a class
    CHECK(w("${B#[ab]}") == "banana");
}

TEST_CASE("lex: a bad escape in a pattern is an error", "[shell_lex]") {
    std::map<std::string, std::string> env = {{"B", "a*b"}};
    CHECK(process_word("${B#a\\*}", env_from_map(env)) == "b");
    CHECK_THROWS_WITH(process_word("${B#\\x}", env_from_map(env)), Catch::Contains("invalid escape"));
}

TEST_CASE("lex: skip_quotes treats quotes as text (COPY heredoc bodies)", "[shell_lex]") {
    LexOptions o{.skip_quotes = true};
    CHECK(process("'$V' \"$V\" \\$V it's", env_from_map(test_env()), o).word == "'val' \"val\" $V it's");
}

TEST_CASE("lex: a run of stars in a pattern is one star", "[shell_lex]") {
    // Found by tests/fuzz (shell_lex target; corpus file crash-pattern-star-run): each star was
    // a backtracking "[^\n]*" of std::regex, so 30 stars and no match in a short value tried
    // every way of splitting the value between them and never finished.
    const std::string stars(30, '*');
    CHECK(word("${PATH_/" + stars + "z/x}") == "/usr/local/bin");
    CHECK(word("${PATH_/" + stars + "c/x}") == "xal/bin");
    CHECK(word("${PATH_/" + stars + "c/x}") == word("${PATH_/*c/x}"));
    CHECK(word("${F#" + stars + ".}") == "tar.gz");
    CHECK(word("${F%%." + stars + "}") == "archive");
    CHECK(word("${F/\\**/x}") == "archive.tar.gz");  // an escaped star stays literal
}

TEST_CASE("lex: long patterns and values match without recursion", "[shell_lex]") {
    // Found by tests/fuzz (shell_lex target; tests/fuzz/corpus/shell_lex/crash-regex-stack-overflow):
    // std::regex's compiler recursed once per pattern element and its executor once per
    // character of the value, so either, long enough, overflowed the stack.
    const std::string long_value(200000, 'a');
    std::map<std::string, std::string> env = {{"L", long_value + "b"}, {"S", "xyz"}};
    auto w = [&](const std::string& in) { return process_word(in, env_from_map(env)); };
    CHECK(w("${L%%*b}").empty());
    CHECK(w("${L#*b}").empty());
    CHECK(w("${L/a*b/x}") == "x");
    CHECK(w("${L//a/}") == "b");
    const std::string long_pattern(100000, 'q');
    CHECK(w("${S/" + long_pattern + "/x}") == "xyz");
    CHECK(w("${S#" + long_pattern + "}") == "xyz");
}

TEST_CASE("lex: pattern matching follows Go's leftmost-first preferences", "[shell_lex]") {
    std::map<std::string, std::string> env = {{"B", "banana"}, {"E", ""}, {"N", "a\nb"}};
    auto w = [&](const std::string& in) { return process_word(in, env_from_map(env)); };
    CHECK(w("${B#*a}") == "nana");    // shortest prefix
    CHECK(w("${B##*a}") == "");       // longest
    CHECK(w("${B%a*}") == "banan");   // shortest suffix
    CHECK(w("${B%%a*}") == "b");      // longest
    CHECK(w("${B/a*a/X}") == "bX");   // greedy: the longest from the leftmost start
    CHECK(w("${B//*/X}") == "X");     // Go: the empty match at the end abuts the first: not replaced
    CHECK(w("${E//*/X}") == "X");     // an empty value: one empty match at 0
    CHECK(w("${B//x*/X}") == "banana");
    CHECK(w("${N/*/X}") == "X\nb");   // * stops at a newline, as Go's "."
    CHECK(w("${B//?/.}") == "......");
    CHECK(w("${B//$/X}") == "banana");  // '$' is literal text in a pattern
}
