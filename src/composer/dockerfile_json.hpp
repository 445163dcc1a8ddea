// What `aishell build --check` prints: a parsed Dockerfile as JSON (the parse-tree format the
// test corpus pins down) or as text, with variables expanded as far as the Dockerfile itself
// defines them.
//
// JSON shape:
//   {"directives": {"escape": "\\", "syntax": .., "check": ..},      // syntax/check when given
//    "args": [{"name": "V", "value": "1" | null, "line": 1, "expanded": "1" | null}],  // global ARGs
//    "stages": [{"name": "build" | null, "index": 0, "from": "debian:12" (expanded),
//                "from_raw": "debian:$V", "platform": "..." (when --platform), "line": 2,
//                "instructions": [{"name": "RUN", "line": 3, "flags": {"mount": [..], "network": "none"},
//                                  "args": [..], "json": false,
//                                  "heredocs": [{"name": "EOF", "content": "..", "expand": true, "chomp": false}],
//                                  "expanded": [..], "unresolved": [..]}]}],
//    "warnings": [..]}
// args are as parsed: shell form is one string; ENV/LABEL pairs are "KEY=VALUE" with the value
// raw (quotes kept); HEALTHCHECK starts with "CMD" or "NONE"; ONBUILD holds its trigger line.
// A heredoc body appears once, under "heredocs"; the opener ("<<EOF") stays in args.
// "expanded" is present for the instructions BuildKit expands (ADD ARG COPY ENV EXPOSE LABEL
// STOPSIGNAL USER VOLUME WORKDIR) and "unresolved" lists the variables referenced there that the
// Dockerfile does not define: the base image's Env may define them (else they expand empty).
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "composer/instructions.hpp"

namespace aishell::composer {

struct CheckOptions {
    std::map<std::string, std::string> build_args;  // --build-arg K=V
    std::string target_platform;                    // "" = host
};

// Throws "FILE:LINE: ..." when an expansion fails (bad substitution, ${V:?msg}).
nlohmann::json dockerfile_to_json(const Dockerfile& df, const CheckOptions& options);
std::string dockerfile_to_text(const Dockerfile& df, const CheckOptions& options);

}  // namespace aishell::composer
