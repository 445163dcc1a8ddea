// The Dockerfile parser's API as the build engine uses it: directives, line handling, flags,
// typed instructions (mount options, healthcheck durations, COPY/ADD fields, heredoc sources),
// and the ARG scopes that FROM lines and stages expand with.
#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "composer/dockerfile_parser.hpp"
#include "composer/instructions.hpp"
#include "oci/types.hpp"

using namespace aishell;
using namespace aishell::composer;
using namespace std::chrono_literals;

namespace {

Dockerfile parse(const std::string& text) { return parse_dockerfile(text, "Dockerfile"); }

template <typename T>
const T& only(const Dockerfile& df, std::size_t stage = 0, std::size_t index = 0) {
    REQUIRE(df.stages.size() > stage);
    REQUIRE(df.stages[stage].instructions.size() > index);
    const T* t = std::get_if<T>(&df.stages[stage].instructions[index].command);
    REQUIRE(t);
    return *t;
}

}  // namespace

TEST_CASE("parser: directives only at the very top", "[dockerfile][parser]") {
    auto df = parse("# syntax=docker/dockerfile:1.7\n#ESCAPE = `\n# check=skip=JSONArgsRecommended\nFROM a\nRUN x `\n  y\n");
    CHECK(df.directives.syntax == "docker/dockerfile:1.7");
    CHECK(df.directives.escape == '`');
    CHECK(df.directives.check == "skip=JSONArgsRecommended");
    CHECK(df.stages[0].instructions[0].node.args == std::vector<std::string>{"x   y"});

    // After a comment, a blank line or an unknown directive, "# escape=" is just a comment.
    CHECK(parse("# hello\n# escape=`\nFROM a\n").directives.escape == '\\');
    CHECK(parse("\n# escape=`\nFROM a\n").directives.escape == '\\');
    CHECK(parse("# foo=bar\n# escape=`\nFROM a\n").directives.escape == '\\');
    CHECK(parse("FROM a\n# escape=`\n").directives.escape == '\\');
    CHECK_FALSE(parse("FROM a\n").directives.syntax);
}

TEST_CASE("parser: lines, continuations and comments", "[dockerfile][parser]") {
    auto df = parse("FROM a\nRUN a \\\t \n# comment\n\n  b\nRUN c\n");
    REQUIRE(df.stages[0].instructions.size() == 2);
    const Node& run = df.stages[0].instructions[0].node;
    CHECK(run.args == std::vector<std::string>{"a   b"});
    CHECK(run.start_line == 2);
    CHECK(run.end_line == 5);
    CHECK(df.stages[0].instructions[1].line() == 6);
    CHECK(df.warnings == std::vector<std::string>{"Dockerfile:4: empty continuation line (deprecated in Docker)"});
    // Keywords are case-insensitive; the original text is kept for history and messages.
    auto lower = parse("from a as B\nworkdir /x\n");
    CHECK(lower.stages[0].name == "b");
    CHECK(lower.stages[0].instructions[0].name() == "WORKDIR");
    CHECK(lower.stages[0].instructions[0].node.original == "workdir /x");
}

TEST_CASE("parser: an escaped escape character at the end of a line ends the instruction", "[dockerfile][parser]") {
    auto args = [](const Dockerfile& df) {
        std::vector<std::vector<std::string>> out;
        for (const auto& i : df.stages.at(0).instructions) out.push_back(i.node.args);
        return out;
    };
    using Args = std::vector<std::vector<std::string>>;
    // BuildKit's testfile trailing-backslash: C and D are two instructions.
    CHECK(args(parse("FROM a\nENV C x\\\\\nENV D y\n")) == Args{{"C", "x\\\\", ""}, {"D", "y", ""}});
    // Spaces after the pair change nothing; three in a row end the line too (BuildKit's regexp).
    CHECK(args(parse("FROM a\nRUN x \\\\ \t\nRUN y\n")) == Args{{"x \\\\"}, {"y"}});
    CHECK(args(parse("FROM a\nRUN x\\\\\\\nRUN y\n")) == Args{{"x\\\\\\"}, {"y"}});
    // One escape continues, after any other character or alone on a line.
    CHECK(args(parse("FROM a\nRUN x \\\n\\\ny\n")) == Args{{"x y"}});
    CHECK(args(parse("FROM a\nRUN \\\\x\\\ny\n")) == Args{{"\\\\xy"}});
    // With the backtick as escape character, a doubled backtick ends the line and a trailing
    // backslash is an ordinary character.
    CHECK(args(parse("# escape=`\nFROM a\nRUN x``\nRUN y\\\nRUN z `\n w\n")) == Args{{"x``"}, {"y\\"}, {"z  w"}});
}

TEST_CASE("parser: flags end at the first word without --", "[dockerfile][parser]") {
    auto df = parse("FROM a\nRUN --mount=\"type=bind,target=/a b\" --network=none echo --not-a-flag\n"
                    "COPY --chown=1:1 -- --weird /dst\n");
    const Node& run = df.stages[0].instructions[0].node;
    CHECK(run.flags == std::vector<std::string>{"--mount=type=bind,target=/a b", "--network=none"});
    CHECK(run.args == std::vector<std::string>{"echo --not-a-flag"});
    const auto& copy = only<CopyInstr>(df, 0, 1);
    CHECK(copy.chown == "1:1");
    CHECK(copy.sources == std::vector<std::string>{"--weird"});
}

TEST_CASE("parser: RUN mounts are typed with canonical option names", "[dockerfile][parser]") {
    auto df = parse(
        "FROM a\nRUN --mount=type=cache,dst=/c,id=x,sharing=locked,mode=0700,uid=1,gid=2,ro "
        "--mount=src=ctx,destination=/b,rw=true --mount=type=secret,id=tok,env=TOKEN,required "
        "--mount=type=ssh --network=host make\n");
    const auto& run = only<RunInstr>(df);
    REQUIRE(run.mounts.size() == 4);
    CHECK(run.mounts[0].type == "cache");
    CHECK(run.mounts[0].options == std::map<std::string, std::string>{{"target", "/c"}, {"id", "x"}, {"sharing", "locked"},
                                                                      {"mode", "0700"}, {"uid", "1"}, {"gid", "2"},
                                                                      {"readonly", "true"}});
    CHECK(run.mounts[1].type == "bind");  // the default type
    CHECK(run.mounts[1].options == std::map<std::string, std::string>{{"source", "ctx"}, {"target", "/b"}, {"readonly", "false"}});
    CHECK(run.mounts[2].options ==
          std::map<std::string, std::string>{{"id", "tok"}, {"env", "TOKEN"}, {"required", "true"}, {"readonly", "true"}});
    CHECK(run.mounts[3].type == "ssh");
    CHECK(run.mounts[3].options == std::map<std::string, std::string>{{"readonly", "true"}});
    CHECK(run.network == "host");
    CHECK_FALSE(run.command.exec_form);
}

TEST_CASE("parser: RUN mount defaults and boolean spellings as BuildKit reads them", "[dockerfile][parser]") {
    auto df = parse("FROM a AS s\nFROM b\nRUN --mount=target=/a --mount=type=cache,target=/c,sharing=LOCKED,ro=1 "
                    "--mount=type=tmpfs,target=/t,size=64m,rw=F --mount=type=bind,from=s,target=/s,readwrite=True "
                    "--mount=type=secret,src=/run/token,target=/t2 x\n");
    const auto& run = only<RunInstr>(df, 1);
    REQUIRE(run.mounts.size() == 5);
    CHECK(run.mounts[0].options.at("readonly") == "true");  // bind: read-only unless told
    CHECK(run.mounts[1].options.at("readonly") == "true");
    CHECK(run.mounts[1].options.at("sharing") == "locked");
    CHECK(run.mounts[2].options.at("readonly") == "true");  // rw=F
    CHECK(run.mounts[2].options.at("size") == "64m");
    CHECK(run.mounts[3].options.at("readonly") == "false");
    CHECK(run.mounts[3].options.at("from") == "s");
    CHECK(run.mounts[4].options.at("source") == "/run/token");
    // Values may hold variables; they expand at build time.
    auto vars = parse("FROM a\nRUN --mount=type=cache,target=$DIR,id=${ID},readonly=$RO x\n");
    CHECK(only<RunInstr>(vars).mounts[0].options.at("readonly") == "$RO");
}

TEST_CASE("parser: HEALTHCHECK durations and retries", "[dockerfile][parser]") {
    auto df = parse("FROM a\nHEALTHCHECK --interval=1m30s --timeout=1.5s --start-period=0 --retries=4 CMD [\"true\"]\n"
                    "HEALTHCHECK NONE\n");
    const auto& h = only<HealthcheckInstr>(df);
    CHECK(h.interval == 90s);
    CHECK(h.timeout == 1500ms);
    CHECK(h.start_period == 0s);
    CHECK_FALSE(h.start_interval);
    CHECK(h.retries == 4);
    CHECK(h.test.exec_form);
    CHECK(h.test.args == std::vector<std::string>{"true"});
    CHECK(only<HealthcheckInstr>(df, 0, 1).none);
}

TEST_CASE("parser: COPY and ADD fields and heredoc sources", "[dockerfile][parser]") {
    auto df = parse("FROM a AS one\nFROM b\nCOPY --from=one --chmod=644 --link=false <<A <<'B' x /dst/\na\nA\nb\nB\n"
                    "ADD --checksum=sha256:00 --keep-git-dir https://h/x.git /src\n");
    const auto& copy = only<CopyInstr>(df, 1, 0);
    CHECK(copy.from == "one");
    CHECK(copy.chmod == "644");
    CHECK_FALSE(copy.link);
    CHECK(copy.sources == std::vector<std::string>{"<<A", "<<'B'", "x"});
    CHECK(copy.dest == "/dst/");
    REQUIRE(copy.heredocs.size() == 2);
    CHECK(copy.heredocs[0].content == "a\n");
    CHECK(copy.heredocs[0].expand);
    CHECK(copy.heredocs[1].content == "b\n");
    CHECK_FALSE(copy.heredocs[1].expand);
    const auto& add = only<AddInstr>(df, 1, 1);
    CHECK(add.checksum == "sha256:00");
    CHECK(add.keep_git_dir);
    CHECK(df.stages[1].instructions[1].line() == 8);
}

TEST_CASE("parser: heredoc words", "[dockerfile][parser]") {
    CHECK(parse_heredoc_word("<<EOF")->name == "EOF");
    CHECK(parse_heredoc_word("<<-EOF")->chomp);
    CHECK_FALSE(parse_heredoc_word("<<'EOF'")->expand);
    CHECK_FALSE(parse_heredoc_word("<<E\"O\"F")->expand);
    CHECK(parse_heredoc_word("<<E\"O\"F")->name == "EOF");
    CHECK(parse_heredoc_word("2<<EOF")->fd == 2);
    CHECK_FALSE(parse_heredoc_word("<<"));
    CHECK_FALSE(parse_heredoc_word("<<<EOF"));
    CHECK_FALSE(parse_heredoc_word("x<<EOF"));
    // A line with an unbalanced quote has no heredocs (the shell reports the quote later).
    auto quote = parse("FROM a\nRUN echo \"<<EOF\nCOPY <<\"a /b\n");
    CHECK(quote.stages[0].instructions.size() == 2);
    CHECK(quote.stages[0].instructions[0].node.heredocs.empty());
    CHECK(only<CopyInstr>(quote, 0, 1).sources == std::vector<std::string>{"<<\"a"});
    // Heredocs are read only where BuildKit allows them: not in JSON forms or other instructions.
    auto df = parse("FROM a\nRUN [\"cat\", \"<<EOF\"]\nLABEL x=<<EOF\n");
    CHECK(df.stages[0].instructions[0].node.heredocs.empty());
    CHECK(df.stages[0].instructions.size() == 2);
}

TEST_CASE("parser: ONBUILD keeps its trigger and validates it now", "[dockerfile][parser]") {
    auto df = parse("FROM a\nonbuild   run --mount=type=cache,target=/c make\n");
    const auto& on = only<OnbuildInstr>(df);
    CHECK(on.trigger == "RUN");
    CHECK(on.expression == "run --mount=type=cache,target=/c make");
}

TEST_CASE("parser: global ARGs, build args and the platform args", "[dockerfile][parser]") {
    auto df = parse("ARG A=1 B=$A\nARG C\nARG D=${C:-none}\nFROM img:$A-$B-$D-$TARGETARCH\n");
    REQUIRE(df.global_args.size() == 4);
    auto scope = global_arg_scope(df, {}, "linux/arm64/v8");
    CHECK(scope.at("B") == "1");
    CHECK(scope.count("C") == 0);
    CHECK(scope.at("D") == "none");
    CHECK(expand_from(df, df.stages[0], scope) == "img:1-1-none-arm64");
    auto overridden = global_arg_scope(df, {{"A", "9"}, {"C", "c"}}, "linux/amd64");
    CHECK(expand_from(df, df.stages[0], overridden) == "img:9-9-c-amd64");
    auto host = global_arg_scope(df, {}, "");
    const oci::Platform p = oci::Platform::host();
    CHECK(host.at("BUILDARCH") == p.architecture);
    CHECK(host.at("TARGETOS") == "linux");
    CHECK(host.at("TARGETPLATFORM") == host.at("BUILDPLATFORM"));
    CHECK(platform_args("linux/arm/v7").at("TARGETVARIANT") == "v7");
    CHECK(global_arg_scope(df, {{"TARGETARCH", "riscv64"}}, "linux/amd64").at("TARGETARCH") == "riscv64");
}

TEST_CASE("parser: port and signal checks", "[dockerfile][parser]") {
    for (const char* ok : {"80", "80/tcp", "53/UDP", "1-65535/sctp", "8000-8000"}) {
        INFO(ok);
        CHECK_FALSE(port_spec_error(ok));
    }
    for (const char* bad : {"", "80/", "tcp", "-1", "10-5", "70000", "80/http", "1.2.3.4:80:80"}) {
        INFO(bad);
        CHECK(port_spec_error(bad));
    }
    for (const char* ok : {"SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-1", "sigwinch"}) {
        INFO(ok);
        CHECK_FALSE(signal_error(ok));
    }
    for (const char* bad : {"SIGFOO", "0", "", "RTMIN+16", "-9"}) {
        INFO(bad);
        CHECK(signal_error(bad));
    }
}
