// Typed Dockerfile instructions and stages, as BuildKit's frontend/dockerfile/instructions
// defines them: every flag validated per instruction (an unknown flag is an error), arities
// checked, FROM/ARG scoping resolved. The build engine consumes these structs directly and
// expands variables at dispatch time with expand_word/expand_words (the image's own Env is
// only known then). Which fields expand is stated on each struct, as BuildKit does it.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "composer/dockerfile_parser.hpp"
#include "composer/shell_lex.hpp"

namespace aishell::composer {

struct KeyValue {
    std::string key;
    std::string value;     // raw: quotes and escapes still in (the lexer removes them)
    bool no_delim = false; // "ENV KEY value" (legacy form)
};

// A command in shell form (one string, run by the stage's SHELL) or exec form (JSON array).
struct CommandLine {
    std::vector<std::string> args;
    bool exec_form = false;
};

// FROM [--platform=P] image [AS name]. base and platform expand with the global ARGs only.
struct FromInstr {
    std::string base;
    std::string stage_name;  // lower-cased, "" when unnamed
    std::string platform;
};

// RUN --mount=type=...,k=v. Option values expand (BuildKit expands mount options).
struct RunMount {
    std::string type = "bind";  // bind cache tmpfs secret ssh
    std::map<std::string, std::string> options;  // canonical keys: target source from id mode uid gid sharing size env required readonly
};

// RUN [--mount=...]... [--network=default|none|host] command. No expansion (the shell does it).
struct RunInstr {
    CommandLine command;
    std::vector<RunMount> mounts;
    std::string network = "default";
    std::vector<Heredoc> heredocs;
};

struct CmdInstr { CommandLine command; };         // no expansion
struct EntrypointInstr { CommandLine command; };  // no expansion
struct ShellInstr { std::vector<std::string> shell; };  // no expansion
struct LabelInstr { std::vector<KeyValue> labels; };    // keys and values expand
struct MaintainerInstr { std::string name; };           // no expansion
struct ExposeInstr { std::vector<std::string> ports; }; // each expands to words
struct EnvInstr { std::vector<KeyValue> env; };         // keys and values expand

// COPY and ADD: sources, dest and the flag values expand. A source that is a heredoc opener
// ("<<EOF") names one of heredocs.
// What COPY and ADD share: the sources (heredoc openers among them), the destination, and the
// flags both take.
struct FileTransfer {
    std::vector<std::string> sources;
    std::string dest;
    std::vector<Heredoc> heredocs;
    std::string chown;
    std::string chmod;
    bool link = false;
    std::vector<std::string> excludes;
};
struct CopyInstr : FileTransfer {
    std::string from;  // stage name, stage index or image reference; "" = the build context
};
struct AddInstr : FileTransfer {
    std::string checksum;  // sha256:... for http(s) sources
    bool keep_git_dir = false;
};

struct VolumeInstr { std::vector<std::string> volumes; };  // each expands
struct UserInstr { std::string user; };                    // expands
struct WorkdirInstr { std::string path; };                 // expands

struct ArgDecl {
    std::string name;                  // raw (expands)
    std::optional<std::string> value;  // raw default (expands); nullopt = no default
};
struct ArgInstr { std::vector<ArgDecl> args; };

// ONBUILD trigger: kept as written (it runs in images built FROM this one) and validated.
struct OnbuildInstr {
    std::string expression;
    std::string trigger;  // its instruction keyword, upper case
};
struct StopsignalInstr { std::string signal; };  // expands

// HEALTHCHECK NONE | HEALTHCHECK [--interval=..] [--timeout=..] [--start-period=..]
// [--start-interval=..] [--retries=N] CMD command. Durations in nanoseconds (as Docker's config).
struct HealthcheckInstr {
    bool none = false;
    CommandLine test;
    std::optional<std::chrono::nanoseconds> interval, timeout, start_period, start_interval;
    std::optional<int> retries;
};

using Command = std::variant<FromInstr, RunInstr, CmdInstr, LabelInstr, MaintainerInstr, ExposeInstr,
                             EnvInstr, AddInstr, CopyInstr, EntrypointInstr, VolumeInstr, UserInstr,
                             WorkdirInstr, ArgInstr, OnbuildInstr, StopsignalInstr, HealthcheckInstr,
                             ShellInstr>;

struct Instruction {
    Command command;
    Node node;  // the parsed line (keyword, original text, flags, args, heredocs, lines)
    int line() const { return node.start_line; }
    const std::string& name() const { return node.keyword; }
};

struct Stage {
    std::string name;           // "" when unnamed
    int index = 0;
    FromInstr from;             // raw
    Node from_node;
    std::vector<Instruction> instructions;
    int line() const { return from_node.start_line; }
};

struct Dockerfile {
    std::string filename;
    Directives directives;
    std::vector<std::pair<ArgDecl, int>> global_args;  // ARGs before the first FROM, with lines
    std::vector<Stage> stages;
    std::vector<std::string> warnings;
};

// Parses text into stages; throws aishell::Error "FILE:LINE: message" with a hint.
Dockerfile parse_dockerfile(std::string_view text, const std::string& filename);
// Reads and parses a file.
Dockerfile load_dockerfile(const std::string& path);

// One instruction from a node (used for the stage body and to validate ONBUILD triggers).
Command parse_instruction(const Node& node, const std::string& filename);

// Why an EXPOSE port spec ("80", "53/udp", "8000-8010/tcp") is invalid; nullopt when valid.
std::optional<std::string> port_spec_error(const std::string& spec);
// The ExposedPorts keys of one (expanded) EXPOSE port spec, as BuildKit's parsePortSpecs: a
// range is one key per port ("8000-8001" -> "8000/tcp", "8001/tcp"), the protocol lowercased
// and tcp by default. Throws Error for a spec port_spec_error refuses.
std::vector<std::string> exposed_ports(const std::string& spec);
// Why a STOPSIGNAL value ("SIGTERM", "TERM", "15") is invalid; nullopt when valid.
std::optional<std::string> signal_error(const std::string& signal);

// The fields of a comma-separated value as Go's encoding/csv splits them ("" quoting), which
// is how BuildKit reads --mount values and buildx reads --secret and --ssh.
std::vector<std::string> csv_fields(const std::string& s);

// The hint for a variable substitution error.
const char* substitution_hint();

// Build arguments BuildKit defines without an ARG in the Dockerfile: the proxy variables
// (passed to RUN without being declared, never stored in the image) and the platform ones.
const std::vector<std::string>& predefined_proxy_args();
const std::vector<std::string>& predefined_platform_args();

// The values of the automatic platform args (BUILDPLATFORM, TARGETARCH, ...) for a build on
// this host targeting target_platform ("" = the host's).
std::map<std::string, std::string> platform_args(const std::string& target_platform);

// The global scope after the ARGs before the first FROM: their defaults (expanded in order),
// overridden by build_args, plus the platform args. This is what FROM lines expand with.
std::map<std::string, std::string> global_arg_scope(const Dockerfile& df,
                                                    const std::map<std::string, std::string>& build_args,
                                                    const std::string& target_platform = {});

// A stage's FROM after expansion with the global scope; throws "FILE:LINE: ..." on a lexer error.
std::string expand_from(const Dockerfile& df, const Stage& stage,
                        const std::map<std::string, std::string>& global_scope);

// The stage that --target names (by name, case-insensitive), or the last one.
const Stage& target_stage(const Dockerfile& df, const std::string& target);

}  // namespace aishell::composer
