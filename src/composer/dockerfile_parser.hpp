// The first pass over a Dockerfile, as BuildKit's frontend/dockerfile/parser reads it: parser
// directives, comments, line continuations with the active escape character, heredocs, and
// each logical line split into its keyword, its --flags and its arguments (JSON exec form or
// shell form, name=value lists, whitespace lists). instructions.hpp turns these nodes into
// typed instructions and stages.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aishell::composer {

struct Heredoc {
    std::string name;     // the delimiter word, quotes removed ("EOF")
    std::string content;  // every line up to the delimiter, each ending in "\n"
    bool expand = true;   // false when any part of the delimiter was quoted (<<'EOF', <<"EOF")
    bool chomp = false;   // <<-EOF: leading tabs stripped from content lines and the delimiter
    unsigned fd = 0;      // 3<<EOF names a file descriptor (RUN only); 0 when not given
};

// "# name=value" lines at the very top of the file, before any instruction, comment or blank
// line. Unknown directive names end the directive block and are then plain comments.
struct Directives {
    char escape = '\\';
    std::optional<std::string> syntax;  // recorded; aishell always uses its own frontend
    std::optional<std::string> check;   // recorded ("skip=...;error=true")
};

// One logical line (after continuations) and its heredoc bodies.
struct Node {
    std::string keyword;             // upper case: "RUN"
    std::string original;            // the logical line as written, continuations joined
    std::vector<std::string> flags;  // "--mount=type=cache,target=/x" words, quotes removed
    // Arguments as the parser splits them for this keyword:
    //  ENV/LABEL: triples key, value, delimiter ("=" or "" for the "KEY value" form), values raw;
    //  ARG: one "name[=value]" word each, raw; FROM/EXPOSE: whitespace-separated words;
    //  RUN/CMD/ENTRYPOINT/HEALTHCHECK CMD in shell form: one string (the rest of the line);
    //  JSON form: the array's strings (json = true); ADD/COPY/VOLUME: JSON or whitespace words;
    //  USER/WORKDIR/STOPSIGNAL/MAINTAINER: the rest of the line as one string;
    //  HEALTHCHECK: "NONE" or "CMD" followed by the command; ONBUILD: the trigger (see next).
    std::vector<std::string> args;
    bool json = false;
    std::vector<Heredoc> heredocs;
    std::shared_ptr<Node> next;  // ONBUILD's trigger instruction
    int start_line = 0;
    int end_line = 0;
};

struct ParsedDockerfile {
    std::string filename;  // for "FILE:LINE: message" errors
    Directives directives;
    std::vector<Node> nodes;
    std::vector<std::string> warnings;  // "FILE:LINE: ..." (empty continuation lines)
};

// Parses text; throws aishell::Error "FILE:LINE: message" with a hint.
ParsedDockerfile parse_dockerfile_text(std::string_view text, const std::string& filename);

// The instruction keywords BuildKit knows, upper case.
const std::vector<std::string>& known_instructions();

// Heredoc word parsing shared with the instruction layer: "<<EOF", "<<-'EOF'", "3<<EOF".
// Returns nullopt when word is not a heredoc opener; throws Error when its fd does not fit.
std::optional<Heredoc> parse_heredoc_word(std::string_view word);

// Throws Error("FILE:LINE: message", hint).
[[noreturn]] void fail_at(const std::string& file, int line, const std::string& message,
                          std::string hint = {});

// The closest candidate within a small edit distance, for "did you mean X?" hints.
std::optional<std::string> suggest(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace aishell::composer
