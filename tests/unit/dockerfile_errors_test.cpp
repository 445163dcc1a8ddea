// Bad Dockerfiles: at least one per instruction, each naming FILE:LINE in its message (checked
// verbatim, as users read it) and carrying a hint where the fix is not obvious.
#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "composer/dockerfile_json.hpp"
#include "composer/instructions.hpp"

using namespace aishell;
using namespace aishell::composer;

namespace {

struct ErrorCase {
    const char* name;
    const char* text;
    const char* message;
};

// Parses and renders as `build --check` does (expansion errors surface while rendering).
std::optional<Error> check_error(const std::string& text) {
    try {
        Dockerfile df = parse_dockerfile(text, "Dockerfile");
        (void)dockerfile_to_json(df, CheckOptions{{}, "linux/amd64"});
    } catch (const Error& e) {
        return e;
    }
    return std::nullopt;
}

const ErrorCase kCases[] = {
    {"unknown instruction", "FROM a\nRUNN echo\n", "Dockerfile:2: unknown instruction: RUNN"},
    {"instruction before FROM", "RUN echo\nFROM a\n", "Dockerfile:1: RUN: no build stage in current context"},
    {"FROM arity", "FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments"},
    {"FROM stage name", "FROM a AS 1abc\n",
     "Dockerfile:1: invalid name for build stage: \"1abc\", name can't start with a number or contain symbols"},
    {"FROM flag", "FROM --plat=x a\n", "Dockerfile:1: FROM: unknown flag: --plat"},
    {"FROM platform", "FROM --platform=linux a\n", "Dockerfile:1: FROM --platform=linux: invalid platform \"linux\""},
    {"FROM duplicate name", "FROM a AS x\nFROM b AS X\n", "Dockerfile:2: duplicate stage name \"x\""},
    {"RUN empty", "FROM a\nRUN\n", "Dockerfile:2: RUN requires at least one argument"},
    {"RUN mount target", "FROM a\nRUN --mount=type=cache echo\n", "Dockerfile:2: RUN --mount type=cache requires a target"},
    {"RUN mount type", "FROM a\nRUN --mount=type=nfs,target=/x echo\n",
     "Dockerfile:2: RUN --mount: unsupported mount type \"nfs\""},
    {"RUN mount key", "FROM a\nRUN --mount=type=cache,target=/x,colour=red echo\n",
     "Dockerfile:2: RUN --mount: unexpected key 'colour' in 'colour=red'"},
    {"RUN mount option for type", "FROM a\nRUN --mount=type=tmpfs,target=/x,id=foo echo\n",
     "Dockerfile:2: RUN --mount: option 'id' is not allowed with type=tmpfs"},
    {"RUN mount sharing", "FROM a\nRUN --mount=type=cache,target=/x,sharing=everyone echo\n",
     "Dockerfile:2: RUN --mount: unsupported sharing value \"everyone\""},
    {"RUN mount mode", "FROM a\nRUN --mount=type=secret,id=s,mode=rw echo\n", "Dockerfile:2: RUN --mount: invalid mode \"rw\""},
    {"RUN mount from variable", "FROM a\nRUN --mount=from=$STAGE,target=/s x\n",
     "Dockerfile:2: RUN --mount: 'from' doesn't support variable expansion, define alias stage instead"},
    {"RUN mount secret source and id", "FROM a\nRUN --mount=type=secret,id=a,source=b x\n",
     "Dockerfile:2: RUN --mount: both source and id can't be set"},
    {"RUN mount secret without name", "FROM a\nRUN --mount=type=secret,env=TOKEN x\n",
     "Dockerfile:2: RUN --mount: invalid secret mount. one of source, target required"},
    {"RUN mount size", "FROM a\nRUN --mount=type=tmpfs,target=/t,size=lots x\n",
     "Dockerfile:2: RUN --mount: invalid value for size: lots"},
    {"RUN mount boolean", "FROM a\nRUN --mount=type=bind,target=/t,ro=yes x\n",
     "Dockerfile:2: RUN --mount: invalid value for ro: yes"},
    {"RUN mount mode on bind", "FROM a\nRUN --mount=type=bind,target=/t,mode=0644 x\n",
     "Dockerfile:2: RUN --mount: option 'mode' is not allowed with type=bind"},
    {"RUN mount key without value", "FROM a\nRUN --mount=type=cache,target x\n",
     "Dockerfile:2: RUN --mount: invalid field 'target' must be a key=value pair"},
    {"RUN network", "FROM a\nRUN --network=bridge echo\n", "Dockerfile:2: RUN: unsupported network mode: bridge"},
    {"RUN security", "FROM a\nRUN --security=insecure echo\n", "Dockerfile:2: RUN --security is not supported"},
    {"RUN misspelt flag", "FROM a\nRUN --netwrk=none echo\n", "Dockerfile:2: RUN: unknown flag: --netwrk"},
    {"RUN JSON non-string", "FROM a\nRUN [\"a\", 1]\n",
     "Dockerfile:2: RUN: when using JSON array syntax, arrays must be comprised of strings only"},
    {"RUN JSON trailing text", "FROM a\nRUN [\"a\"] b\n", "Dockerfile:2: RUN: unexpected text after the JSON array: b"},
    {"RUN heredoc unterminated", "FROM a\nRUN <<EOF\necho\n", "Dockerfile:2: unterminated heredoc <<EOF"},
    // Numbers too large for their type: the field and line, never std::stoul's "stoul".
    {"RUN heredoc fd out of range", "FROM a\nRUN 99999999999999999999<<EOF\nx\nEOF\n",
     "Dockerfile:2: heredoc file descriptor \"99999999999999999999\" is out of range (0 to 4294967295)"},
    {"CMD empty", "FROM a\nCMD\n", "Dockerfile:2: CMD requires at least one argument"},
    {"ENTRYPOINT empty", "FROM a\nENTRYPOINT\n", "Dockerfile:2: ENTRYPOINT requires at least one argument"},
    {"LABEL empty", "FROM a\n\nLABEL\n", "Dockerfile:3: LABEL requires at least one argument"},
    {"LABEL without =", "FROM a\nLABEL a=b c\n",
     "Dockerfile:2: Syntax error - can't find = in \"c\". Must be of the form: name=value"},
    {"LABEL blank name", "FROM a\nLABEL =b\n", "Dockerfile:2: LABEL names can not be blank"},
    {"MAINTAINER empty", "FROM a\nMAINTAINER\n", "Dockerfile:2: MAINTAINER requires exactly one argument"},
    {"EXPOSE empty", "FROM a\nEXPOSE\n", "Dockerfile:2: EXPOSE requires at least one argument"},
    {"EXPOSE protocol", "FROM a\nEXPOSE 80/xyz\n", "Dockerfile:2: EXPOSE: invalid proto: xyz"},
    {"EXPOSE port", "FROM a\nEXPOSE eighty\n", "Dockerfile:2: EXPOSE: invalid port specification: eighty"},
    {"EXPOSE after expansion", "FROM scratch\nENV P=99999\nEXPOSE $P\n",
     "Dockerfile:3: EXPOSE $P: invalid port specification: 99999 (ports go up to 65535)"},
    {"ENV one word", "FROM a\nENV ONLYKEY\n", "Dockerfile:2: ENV must have two arguments"},
    {"ENV without =", "FROM a\nENV A=1 B\n",
     "Dockerfile:2: Syntax error - can't find = in \"B\". Must be of the form: name=value"},
    {"ENV bad substitution", "FROM a\nENV A=${B\n", "Dockerfile:2: ENV: syntax error: missing '}'"},
    {"ENV required variable", "FROM scratch\nENV A=\"${B:?B is required}\"\n", "Dockerfile:2: ENV: B: B is required"},
    {"ADD one argument", "FROM a\nADD x\n",
     "Dockerfile:2: ADD requires at least two arguments, but only one was provided. Destination could not be determined."},
    {"ADD checksum on a local file", "FROM a\nADD --checksum=sha256:abc local.txt /x\n",
     "Dockerfile:2: ADD: checksum can't be specified for non-HTTP(S) sources: local.txt"},
    {"ADD --from", "FROM a\nADD --from=b x /y\n", "Dockerfile:2: ADD: unknown flag: --from"},
    {"COPY one argument", "FROM a\nCOPY x\n",
     "Dockerfile:2: COPY requires at least two arguments, but only one was provided. Destination could not be determined."},
    {"COPY misspelt flag", "FROM a\nCOPY --chmown=1 x /y\n", "Dockerfile:2: COPY: unknown flag: --chmown"},
    {"COPY stage index", "FROM a\nCOPY --from=3 x /y\n", "Dockerfile:2: COPY --from=3: invalid stage index 3"},
    {"COPY from itself", "FROM a AS me\nCOPY --from=me x /y\n", "Dockerfile:2: circular dependency detected on stage: me"},
    {"COPY cycle", "FROM a AS one\nCOPY --from=two x /y\nFROM a AS two\nCOPY --from=one x /y\n",
     "Dockerfile:4: circular dependency detected on stage: one"},
    {"COPY --parents", "FROM a\nCOPY --parents x /y\n", "Dockerfile:2: COPY --parents is not supported"},
    {"COPY boolean flag", "FROM a\nCOPY --link=maybe x /y\n", "Dockerfile:2: COPY: expecting boolean value for flag --link, not: maybe"},
    {"VOLUME empty", "FROM a\nVOLUME\n", "Dockerfile:2: VOLUME requires at least one argument"},
    {"VOLUME blank", "FROM a\nVOLUME [\"\"]\n", "Dockerfile:2: VOLUME specified can not be an empty string"},
    {"USER empty", "FROM a\nUSER\n", "Dockerfile:2: USER requires exactly one argument"},
    {"WORKDIR empty", "FROM a\nWORKDIR\n", "Dockerfile:2: WORKDIR requires exactly one argument"},
    {"ARG empty", "FROM a\nARG\n", "Dockerfile:2: ARG requires at least one argument"},
    {"ARG blank name", "FROM a\nARG =x\n", "Dockerfile:2: ARG names can not be blank"},
    {"ONBUILD empty", "FROM a\nONBUILD\n", "Dockerfile:2: ONBUILD requires at least one argument"},
    {"ONBUILD ONBUILD", "FROM a\nONBUILD ONBUILD RUN x\n", "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"},
    {"ONBUILD FROM", "FROM a\nONBUILD FROM b\n", "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"},
    {"ONBUILD bad trigger", "FROM a\nONBUILD COPY x\n",
     "Dockerfile:2: COPY requires at least two arguments, but only one was provided. Destination could not be determined."},
    {"STOPSIGNAL name", "FROM a\nSTOPSIGNAL SIGFOO\n", "Dockerfile:2: STOPSIGNAL: invalid signal: SIGFOO"},
    {"STOPSIGNAL zero", "FROM a\nSTOPSIGNAL 0\n", "Dockerfile:2: STOPSIGNAL: invalid signal: 0"},
    {"HEALTHCHECK empty", "FROM a\nHEALTHCHECK\n", "Dockerfile:2: HEALTHCHECK requires at least one argument"},
    {"HEALTHCHECK type", "FROM a\nHEALTHCHECK RUN x\n", "Dockerfile:2: Unknown type \"RUN\" in HEALTHCHECK (try CMD)"},
    {"HEALTHCHECK NONE args", "FROM a\nHEALTHCHECK NONE x\n", "Dockerfile:2: HEALTHCHECK NONE takes no arguments"},
    {"HEALTHCHECK CMD empty", "FROM a\nHEALTHCHECK CMD []\n", "Dockerfile:2: Missing command after HEALTHCHECK CMD"},
    {"HEALTHCHECK duration", "FROM a\nHEALTHCHECK --interval=5 CMD x\n",
     "Dockerfile:2: HEALTHCHECK: invalid duration for --interval: \"5\""},
    {"HEALTHCHECK too short", "FROM a\nHEALTHCHECK --timeout=1us CMD x\n",
     "Dockerfile:2: HEALTHCHECK: Interval \"timeout\" cannot be less than 1ms"},
    {"HEALTHCHECK retries", "FROM a\nHEALTHCHECK --retries=-1 CMD x\n", "Dockerfile:2: HEALTHCHECK: --retries cannot be negative (-1)"},
    {"SHELL shell form", "FROM a\nSHELL /bin/bash -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form"},
    {"SHELL empty", "FROM a\nSHELL []\n", "Dockerfile:2: SHELL requires at least one argument"},
    {"escape directive", "# escape=x\nFROM a\n", "Dockerfile:1: invalid escape token 'x' does not match ` or \\"},
    {"directive twice", "# escape=`\n# escape=\\\nFROM a\n", "Dockerfile:2: only one escape parser directive can be used"},
    {"FROM blank after expansion", "ARG IMAGE\nFROM ${IMAGE}\n", "Dockerfile:2: base name (${IMAGE}) should not be blank"},
    {"global ARG expansion", "ARG A=${X\nFROM a\n", "Dockerfile:1: syntax error: missing '}'"},
    {"error line after continuation", "FROM a\nRUN echo \\\n  one\nCOPY \\\n  x\n",
     "Dockerfile:4: COPY requires at least two arguments, but only one was provided. Destination could not be determined."},
    {"error line after heredoc", "FROM a\nRUN <<EOF\nx\nEOF\nWORKDIR\n", "Dockerfile:5: WORKDIR requires exactly one argument"},
};

}  // namespace

TEST_CASE("errors: each bad instruction names FILE:LINE", "[dockerfile][errors]") {
    for (const auto& c : kCases) {
        INFO(c.name << ":\n" << c.text);
        auto error = check_error(c.text);
        REQUIRE(error);
        CHECK(error->message() == c.message);
    }
}

TEST_CASE("errors: numbers beyond a double are the field's error, not std::stod's", "[dockerfile][errors]") {
    const std::string huge = "1" + std::string(400, '0');  // std::stod throws out_of_range ("stod")
    REQUIRE(check_error("FROM a\nRUN --mount=type=tmpfs,target=/t,size=" + huge + "g x\n"));
    REQUIRE(check_error("FROM a\nHEALTHCHECK --interval=" + huge + "s CMD x\n"));
    CHECK(check_error("FROM a\nRUN --mount=type=tmpfs,target=/t,size=" + huge + "g x\n")->message() ==
          "Dockerfile:2: RUN --mount: invalid value for size: " + huge + "g");
    CHECK(check_error("FROM a\nHEALTHCHECK --interval=" + huge + "s CMD x\n")->message() ==
          "Dockerfile:2: HEALTHCHECK: invalid duration for --interval: \"" + huge + "s\"");
}

TEST_CASE("errors: unknown things come with a hint", "[dockerfile][errors]") {
    CHECK(check_error("FROM a\nRUNN echo\n")->hint() == "did you mean RUN?");
    CHECK(check_error("FROM a\nCOPY --chmown=1 x /y\n")->hint() == "did you mean --chown?");
    CHECK(check_error("FROM a\nWORKDIR --x /y\n")->hint() == "WORKDIR takes no flags");
    CHECK(check_error("FROM a\nRUN --mount=type=nfs,target=/x echo\n")->hint() == "use bind, cache, tmpfs, secret or ssh");
    CHECK(check_error("FROM a\nRUN --network=bridge echo\n")->hint() == "use --network=default, none or host");
    for (const auto& c : kCases) {
        INFO(c.name);
        CHECK_FALSE(check_error(c.text)->hint().empty());
    }
}

TEST_CASE("errors: a file without FROM, and --target naming no stage", "[dockerfile][errors]") {
    CHECK(check_error("# just a comment\n\n")->message() == "Dockerfile: no FROM instruction");
    CHECK(check_error("ARG A=1\n")->message() == "Dockerfile: no FROM instruction");
    Dockerfile df = parse_dockerfile("FROM a AS build\nFROM b\n", "Dockerfile");
    CHECK(target_stage(df, "BUILD").index == 0);
    CHECK(target_stage(df, "").index == 1);
    try {
        (void)target_stage(df, "biuld");
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.message() == "Dockerfile: target stage \"biuld\" could not be found");
        CHECK(e.hint() == "did you mean build?");
    }
}
