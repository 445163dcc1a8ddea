// Nodes to typed instructions and stages, with BuildKit's per-instruction flags (bflag.go
// semantics: --name=value, booleans also bare, repeatable flags for --mount/--exclude, unknown
// or duplicate flags are errors) and its arity rules (instructions/parse.go). Error text
// follows BuildKit's where users know it, prefixed "FILE:LINE: " with a hint.
#include "composer/instructions.hpp"

#include <algorithm>
#include <cstdlib>
#include <cctype>
#include <functional>
#include <regex>
#include <string_view>
#include <utility>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/types.hpp"

namespace aishell::composer {

std::vector<std::string> csv_fields(const std::string& s) {
    std::vector<std::string> out(1);
    bool quoted = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (quoted) {
            if (c == '"' && i + 1 < s.size() && s[i + 1] == '"') {
                out.back() += '"';
                ++i;
            } else if (c == '"') {
                quoted = false;
            } else {
                out.back() += c;
            }
        } else if (c == '"' && out.back().empty()) {
            quoted = true;
        } else if (c == ',') {
            out.emplace_back();
        } else {
            out.back() += c;
        }
    }
    return out;
}

namespace {

enum class FlagType { Bool, String, Strings };

struct FlagSpec {
    std::string name;
    FlagType type;
};

struct Flags {
    std::map<std::string, std::string> values;               // Bool ("true"/"false") and String
    std::map<std::string, std::vector<std::string>> lists;   // Strings
    std::string get(const std::string& name) const {
        auto it = values.find(name);
        return it == values.end() ? std::string() : it->second;
    }
    bool flag(const std::string& name) const { return get(name) == "true"; }
    bool has(const std::string& name) const { return values.count(name) || lists.count(name); }
};

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

const std::vector<FlagSpec>& flag_specs(const std::string& keyword) {
    static const std::map<std::string, std::vector<FlagSpec>> specs = {
        {"FROM", {{"platform", FlagType::String}}},
        {"RUN", {{"mount", FlagType::Strings}, {"network", FlagType::String}, {"security", FlagType::String}}},
        {"COPY", {{"from", FlagType::String}, {"chown", FlagType::String}, {"chmod", FlagType::String},
                  {"link", FlagType::Bool}, {"exclude", FlagType::Strings}, {"parents", FlagType::Bool}}},
        {"ADD", {{"chown", FlagType::String}, {"chmod", FlagType::String}, {"checksum", FlagType::String},
                 {"keep-git-dir", FlagType::Bool}, {"link", FlagType::Bool}, {"exclude", FlagType::Strings}}},
        {"HEALTHCHECK", {{"interval", FlagType::String}, {"timeout", FlagType::String},
                         {"start-period", FlagType::String}, {"start-interval", FlagType::String},
                         {"retries", FlagType::String}}},
    };
    static const std::vector<FlagSpec> none;
    auto it = specs.find(keyword);
    return it == specs.end() ? none : it->second;
}

class InstructionParser {
public:
    InstructionParser(const Node& node, const std::string& file) : node_(node), file_(file) {}

    Command parse() {
        flags_ = parse_flags();
        // The instructions of the Dockerfile reference, each with the member that reads its arguments.
        static constexpr std::pair<std::string_view, Command (InstructionParser::*)() const> kInstructions[] = {
            {"FROM", &InstructionParser::from},
            {"RUN", &InstructionParser::run},
            {"CMD", &InstructionParser::cmd},
            {"ENTRYPOINT", &InstructionParser::entrypoint},
            {"SHELL", &InstructionParser::shell},
            {"LABEL", &InstructionParser::label},
            {"ENV", &InstructionParser::env},
            {"MAINTAINER", &InstructionParser::maintainer},
            {"EXPOSE", &InstructionParser::expose},
            {"COPY", &InstructionParser::copy},
            {"ADD", &InstructionParser::add},
            {"VOLUME", &InstructionParser::volume},
            {"USER", &InstructionParser::user},
            {"WORKDIR", &InstructionParser::workdir},
            {"STOPSIGNAL", &InstructionParser::stopsignal},
            {"ARG", &InstructionParser::arg},
            {"ONBUILD", &InstructionParser::onbuild},
            {"HEALTHCHECK", &InstructionParser::healthcheck},
        };
        for (const auto& [keyword, parse_arguments] : kInstructions)
            if (node_.keyword == keyword) return (this->*parse_arguments)();
        fail("unknown instruction: " + node_.keyword);
    }

private:
    [[noreturn]] void fail(const std::string& message, std::string hint = {}) const {
        fail_at(file_, node_.start_line, message, std::move(hint));
    }

    // The instructions whose argument is all of one form: a command line, key=value pairs or one word.
    Command cmd() const { return CmdInstr{command_line(true)}; }
    Command entrypoint() const { return EntrypointInstr{command_line(true)}; }
    Command label() const { return LabelInstr{key_values()}; }
    Command env() const { return EnvInstr{key_values()}; }
    Command maintainer() const { return MaintainerInstr{one_arg()}; }
    Command user() const { return UserInstr{one_arg()}; }
    Command workdir() const { return WorkdirInstr{one_arg()}; }

    Command shell() const {
        if (node_.args.empty()) fail("SHELL requires at least one argument", "SHELL [\"/bin/bash\", \"-c\"]");
        return ShellInstr{node_.args};
    }

    Flags parse_flags() const {
        Flags out;
        const auto& specs = flag_specs(node_.keyword);
        for (const auto& word : node_.flags) {
            if (word.rfind("--", 0) != 0) fail(node_.keyword + ": flag should start with --: " + word);
            std::string body = word.substr(2);
            auto eq = body.find('=');
            std::string name = body.substr(0, eq);
            std::string value = eq == std::string::npos ? "" : body.substr(eq + 1);
            auto spec = std::find_if(specs.begin(), specs.end(), [&](const FlagSpec& s) { return s.name == name; });
            if (spec == specs.end()) {
                std::vector<std::string> names;
                for (const auto& s : specs) names.push_back("--" + s.name);
                auto guess = suggest("--" + name, names);
                std::string hint = guess ? "did you mean " + *guess + "?"
                                   : names.empty() ? node_.keyword + " takes no flags"
                                                   : node_.keyword + " accepts " + join(names, ", ");
                fail(node_.keyword + ": unknown flag: --" + name, hint);
            }
            if (spec->type != FlagType::Strings && out.values.count(name))
                fail(node_.keyword + ": duplicate flag specified: --" + name);
            switch (spec->type) {
                case FlagType::Bool: {
                    std::string v = lower(value);
                    if (eq != std::string::npos && value.empty())
                        fail(node_.keyword + ": missing a value on flag: --" + name, "write --" + name + " or --" + name + "=true|false");
                    if (v.empty()) v = "true";
                    if (v != "true" && v != "false")
                        fail(node_.keyword + ": expecting boolean value for flag --" + name + ", not: " + value,
                             "write --" + name + " or --" + name + "=true|false");
                    out.values[name] = v;
                    break;
                }
                case FlagType::String:
                    if (eq == std::string::npos)
                        fail(node_.keyword + ": missing a value on flag: --" + name, "write --" + name + "=VALUE");
                    out.values[name] = value;
                    break;
                case FlagType::Strings:
                    if (eq == std::string::npos)
                        fail(node_.keyword + ": missing a value on flag: --" + name, "write --" + name + "=VALUE");
                    out.lists[name].push_back(value);
                    break;
            }
        }
        return out;
    }

    static std::string join(const std::vector<std::string>& v, const std::string& sep) {
        std::string out;
        for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
        return out;
    }

    std::string one_arg() const {
        if (node_.args.size() != 1) fail(node_.keyword + " requires exactly one argument", one_arg_hint());
        return node_.args[0];
    }

    std::string one_arg_hint() const {
        const std::string& k = node_.keyword;
        if (k == "USER") return "USER name[:group] or USER uid[:gid]";
        if (k == "WORKDIR") return "WORKDIR /path";
        if (k == "STOPSIGNAL") return "STOPSIGNAL SIGTERM";
        return k + " text";
    }

    CommandLine command_line(bool allow_empty_json) const {
        if (node_.args.empty() && !(node_.json && allow_empty_json))
            fail(node_.keyword + " requires at least one argument",
                 node_.keyword == "RUN" ? "RUN command, or RUN [\"executable\", \"arg\"]"
                                        : "write " + node_.keyword + " [] to clear it");
        return CommandLine{node_.args, node_.json};
    }

    Command from() const {
        FromInstr f;
        f.platform = flags_.get("platform");
        const auto& a = node_.args;
        if (a.size() == 3 && lower(a[1]) == "as") {
            f.stage_name = lower(a[2]);
            static const std::regex valid("^[a-z][a-z0-9-_.]*$");
            if (!std::regex_match(f.stage_name, valid))
                fail("invalid name for build stage: \"" + a[2] + "\", name can't start with a number or contain symbols",
                     "stage names are a lower-case letter followed by letters, digits, '-', '_' or '.'");
        } else if (a.size() != 1) {
            fail("FROM requires either one or three arguments", "FROM image [AS name]");
        }
        f.base = a[0];
        return f;
    }

    Command run() const {
        RunInstr r;
        if (flags_.has("security"))
            fail("RUN --security is not supported",
                 "BuildKit offers it only in its labs syntax, and aishell runs every step without privileges");
        r.command = command_line(false);
        r.heredocs = node_.heredocs;
        if (flags_.has("network")) {
            r.network = flags_.get("network");
            if (r.network != "default" && r.network != "none" && r.network != "host")
                fail("RUN: unsupported network mode: " + r.network, "use --network=default, none or host");
        }
        if (auto it = flags_.lists.find("mount"); it != flags_.lists.end())
            for (const auto& spec : it->second) r.mounts.push_back(mount(spec));
        return r;
    }


    RunMount mount(const std::string& spec) const {
        RunMount m;
        std::vector<std::pair<std::string, std::string>> fields;
        for (const auto& field : csv_fields(spec)) {
            if (field.empty()) continue;
            auto [key, value] = mount_field(field);
            if (key == "type") m.type = lower(value);
            else fields.emplace_back(std::move(key), std::move(value));
        }
        set_mount_options(m, fields);
        // Unless told, bind, secret and ssh mounts are read-only, cache and tmpfs writable.
        if (!m.options.count("readonly"))
            m.options["readonly"] = m.type == "cache" || m.type == "tmpfs" ? "false" : "true";
        check_mount(m);
        return m;
    }

    // One KEY[=VALUE] of --mount as (canonical key, value): aliases resolved, a bare boolean key
    // "true", rw/readwrite turned into readonly's negation.
    std::pair<std::string, std::string> mount_field(const std::string& field) const {
        static const std::map<std::string, std::string> aliases = {
            {"type", "type"},   {"from", "from"},         {"source", "source"},     {"src", "source"},
            {"target", "target"}, {"dst", "target"},      {"destination", "target"}, {"readonly", "readonly"},
            {"ro", "readonly"}, {"rw", "rw"},             {"readwrite", "rw"},       {"id", "id"},
            {"sharing", "sharing"}, {"mode", "mode"},     {"uid", "uid"},            {"gid", "gid"},
            {"size", "size"},   {"required", "required"}, {"env", "env"}};
        auto eq = field.find('=');
        std::string key = lower(field.substr(0, eq));
        std::string value = eq == std::string::npos ? "" : field.substr(eq + 1);
        auto alias = aliases.find(key);
        if (alias == aliases.end()) {
            std::vector<std::string> keys;
            for (const auto& [k, v] : aliases) keys.push_back(k);
            auto guess = suggest(key, keys);
            fail("RUN --mount: unexpected key '" + key + "' in '" + field + "'",
                 guess ? "did you mean " + *guess + "?"
                       : "keys: type, target, source, from, id, sharing, mode, uid, gid, size, required, readonly, env");
        }
        std::string canonical = alias->second;
        if (eq == std::string::npos) {
            if (canonical != "readonly" && canonical != "rw" && canonical != "required")
                fail("RUN --mount: invalid field '" + field + "' must be a key=value pair", "write " + key + "=VALUE");
            value = "true";
        }
        if (canonical == "type") return {canonical, value};
        if (canonical == "from" && value.find('$') != std::string::npos && value.find('$') + 1 != value.size())
            fail("RUN --mount: 'from' doesn't support variable expansion, define alias stage instead",
                 "add a stage FROM ${VAR} AS name and mount from=name");
        if (canonical == "readonly" || canonical == "rw" || canonical == "required") {
            value = bool_value(key, value);
            if (canonical == "rw") {  // rw/readwrite are the negation of readonly
                canonical = "readonly";
                if (value == "true" || value == "false") value = value == "true" ? "false" : "true";
            }
        }
        return {canonical, value};
    }

    // The fields into m.options, each checked against the options m.type takes.
    void set_mount_options(RunMount& m, const std::vector<std::pair<std::string, std::string>>& fields) const {
        // Which options each type takes (BuildKit's runmount.go: mode/uid/gid only for cache,
        // secret and ssh, size only for tmpfs, required only for secret and ssh, sharing only
        // for cache, no from for secrets).
        static const std::map<std::string, std::vector<std::string>> allowed = {
            {"bind", {"target", "source", "from", "readonly"}},
            {"cache", {"target", "source", "from", "readonly", "id", "sharing", "mode", "uid", "gid"}},
            {"tmpfs", {"target", "size", "readonly"}},
            {"secret", {"target", "source", "id", "required", "mode", "uid", "gid", "env", "readonly"}},
            {"ssh", {"target", "id", "required", "mode", "uid", "gid", "readonly"}}};
        auto types = allowed.find(m.type);
        if (types == allowed.end()) {
            auto guess = suggest(m.type, {"bind", "cache", "tmpfs", "secret", "ssh"});
            fail("RUN --mount: unsupported mount type \"" + m.type + "\"",
                 guess ? "did you mean " + *guess + "?" : "use bind, cache, tmpfs, secret or ssh");
        }
        for (const auto& [key, value] : fields) {
            const auto& ok = types->second;
            if (std::find(ok.begin(), ok.end(), key) == ok.end())
                fail("RUN --mount: option '" + key + "' is not allowed with type=" + m.type,
                     "type=" + m.type + " takes " + join(ok, ", "));
            m.options[key] = value;
        }
    }

    // strconv.ParseBool's spellings, normalized to "true"/"false"; "$..." is left for later.
    std::string bool_value(const std::string& key, const std::string& value) const {
        static const std::vector<std::string> yes = {"1", "t", "T", "TRUE", "true", "True"};
        static const std::vector<std::string> no = {"0", "f", "F", "FALSE", "false", "False"};
        if (std::find(yes.begin(), yes.end(), value) != yes.end()) return "true";
        if (std::find(no.begin(), no.end(), value) != no.end()) return "false";
        if (value.find('$') != std::string::npos) return value;
        fail("RUN --mount: invalid value for " + key + ": " + value, "use true or false");
    }

    void check_mount(RunMount& m) const {
        auto has = [&](const char* k) { return m.options.count(k) != 0; };
        auto literal = [](const std::string& v) { return v.find('$') == std::string::npos; };
        if ((m.type == "bind" || m.type == "cache" || m.type == "tmpfs") && !has("target"))
            fail("RUN --mount type=" + m.type + " requires a target", "add target=/path");
        if (m.type == "secret") {
            if (!has("target") && !has("id") && !has("source"))
                fail("RUN --mount: invalid secret mount. one of source, target required", "add id=NAME");
            if (has("source") && has("id")) fail("RUN --mount: both source and id can't be set", "name the secret with id=NAME");
        }
        if (has("sharing") && literal(m.options["sharing"])) {
            std::string& s = m.options["sharing"];
            s = lower(s);
            if (s != "shared" && s != "private" && s != "locked")
                fail("RUN --mount: unsupported sharing value \"" + s + "\"", "use shared, private or locked");
        }
        if (has("mode") && literal(m.options["mode"])) {
            static const std::regex octal("^[0-7]{1,11}$");
            if (!std::regex_match(m.options["mode"], octal))
                fail("RUN --mount: invalid mode \"" + m.options["mode"] + "\"", "mode is octal, e.g. mode=0644");
        }
        for (const char* key : {"uid", "gid"}) {
            static const std::regex digits("^[0-9]{1,10}$");
            if (has(key) && literal(m.options[key]) && !std::regex_match(m.options[key], digits))
                fail(std::string("RUN --mount: invalid ") + key + " \"" + m.options[key] + "\"", "a numeric id");
        }
        if (has("size") && literal(m.options["size"])) {
            // go-units RAMInBytes: a number, an optional space, then k m g t p (binary), i and b optional.
            static const std::regex size("^[0-9]+(\\.[0-9]+)* ?([kKmMgGtTpP])?[iI]?[bB]?$");
            // Length first (no size needs 32 characters): libstdc++'s regex recurses per character.
            if (m.options["size"].size() > 32 || !std::regex_match(m.options["size"], size))
                fail("RUN --mount: invalid value for size: " + m.options["size"], "e.g. size=64m or size=1g");
        }
    }

    std::vector<KeyValue> key_values() const {
        if (node_.args.empty()) fail(node_.keyword + " requires at least one argument", node_.keyword + " name=value");
        std::vector<KeyValue> out;
        for (std::size_t i = 0; i + 3 <= node_.args.size(); i += 3) {
            if (node_.args[i].empty())
                fail(node_.keyword + " names can not be blank", "write " + node_.keyword + " name=value");
            out.push_back({node_.args[i], node_.args[i + 1], node_.args[i + 2].empty()});
        }
        return out;
    }

    Command expose() const {
        if (node_.args.empty()) fail("EXPOSE requires at least one argument", "EXPOSE 8080/tcp");
        for (const auto& p : node_.args) {
            if (p.find('$') != std::string::npos) continue;  // checked after expansion
            if (auto error = port_spec_error(p)) fail("EXPOSE: " + *error, "PORT[/PROTO] or FROM-TO[/PROTO], e.g. 8080/tcp");
        }
        return ExposeInstr{node_.args};
    }

    Command stopsignal() const {
        std::string signal = one_arg();
        if (signal.find('$') == std::string::npos)
            if (auto error = signal_error(signal)) fail("STOPSIGNAL: " + *error, "a name such as SIGTERM or TERM, or a number");
        return StopsignalInstr{signal};
    }

    // What COPY and ADD share: sources, destination (the last argument), the heredocs the
    // sources open, and the flags both take.
    FileTransfer file_transfer() const {
        const auto& a = node_.args;
        if (a.size() < 2)
            fail(node_.keyword + " requires at least two arguments, but only " +
                     (a.empty() ? "none was" : "one was") + " provided. Destination could not be determined.",
                 node_.keyword + " SRC... DEST");
        FileTransfer t;
        t.sources.assign(a.begin(), a.end() - 1);
        t.dest = a.back();
        if (!node_.json) t.heredocs = opened_heredocs(t.sources);
        t.chown = flags_.get("chown");
        t.chmod = flags_.get("chmod");
        t.link = flags_.flag("link");
        if (auto it = flags_.lists.find("exclude"); it != flags_.lists.end()) t.excludes = it->second;
        return t;
    }

    // The heredocs that sources name (`COPY <<EOF /dest`), with their bodies.
    std::vector<Heredoc> opened_heredocs(const std::vector<std::string>& sources) const {
        std::vector<Heredoc> docs;
        for (const auto& s : sources) {
            auto doc = parse_heredoc_word(s);
            if (!doc) continue;
            auto it = std::find_if(node_.heredocs.begin(), node_.heredocs.end(),
                                   [&](const Heredoc& h) { return h.name == doc->name; });
            if (it != node_.heredocs.end()) docs.push_back(*it);
        }
        return docs;
    }

    Command copy() const {
        if (flags_.has("parents"))
            fail("COPY --parents is not supported", "BuildKit offers it only in its labs syntax");
        CopyInstr c{file_transfer()};
        c.from = flags_.get("from");
        return c;
    }

    Command add() const {
        AddInstr a{file_transfer()};
        a.checksum = flags_.get("checksum");
        a.keep_git_dir = flags_.flag("keep-git-dir");
        if (!a.checksum.empty()) {
            for (const auto& s : a.sources) {
                if (s.find('$') != std::string::npos) continue;
                if (s.rfind("http://", 0) != 0 && s.rfind("https://", 0) != 0)
                    fail("ADD: checksum can't be specified for non-HTTP(S) sources: " + s,
                         "--checksum verifies a downloaded file; remove it for local sources");
            }
        }
        return a;
    }

    Command volume() const {
        if (node_.args.empty()) fail("VOLUME requires at least one argument", "VOLUME /data");
        for (const auto& v : node_.args)
            if (v.find_first_not_of(" \t") == std::string::npos)
                fail("VOLUME specified can not be an empty string", "VOLUME [\"/data\"]");
        return VolumeInstr{node_.args};
    }

    Command arg() const {
        if (node_.args.empty()) fail("ARG requires at least one argument", "ARG NAME[=default]");
        ArgInstr out;
        for (const auto& word : node_.args) {
            ArgDecl d;
            auto eq = word.find('=');
            d.name = word.substr(0, eq);
            if (eq != std::string::npos) d.value = word.substr(eq + 1);
            if (d.name.empty()) fail("ARG names can not be blank", "ARG NAME[=default]");
            out.args.push_back(std::move(d));
        }
        return out;
    }

    Command onbuild() const {
        if (!node_.next) fail("ONBUILD requires at least one argument", "ONBUILD RUN make");
        const Node& trigger = *node_.next;
        if (trigger.keyword == "ONBUILD")
            fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", "write the trigger once: ONBUILD RUN make");
        if (trigger.keyword == "FROM" || trigger.keyword == "MAINTAINER")
            fail(trigger.keyword + " isn't allowed as an ONBUILD trigger", "ONBUILD takes any other instruction, e.g. ONBUILD COPY . /src");
        (void)parse_instruction(trigger, file_);  // validates the trigger now, not in a child build
        return OnbuildInstr{trigger.original, trigger.keyword};
    }

    Command healthcheck() const {
        HealthcheckInstr h;
        if (node_.args.empty()) fail("HEALTHCHECK requires at least one argument", "HEALTHCHECK CMD command, or HEALTHCHECK NONE");
        const std::string& type = node_.args[0];
        if (type == "NONE") {
            if (node_.args.size() > 1) fail("HEALTHCHECK NONE takes no arguments", "HEALTHCHECK NONE disables the base image's check");
            if (!node_.flags.empty()) fail("HEALTHCHECK NONE takes no flags", "flags go with HEALTHCHECK [--interval=..] CMD ...");
            h.none = true;
            return h;
        }
        if (type != "CMD") fail("Unknown type \"" + type + "\" in HEALTHCHECK (try CMD)", "HEALTHCHECK CMD command");
        if (node_.args.size() < 2) fail("Missing command after HEALTHCHECK CMD", "HEALTHCHECK CMD curl -f http://localhost/");
        h.test = CommandLine{{node_.args.begin() + 1, node_.args.end()}, node_.json};
        h.interval = duration("interval");
        h.timeout = duration("timeout");
        h.start_period = duration("start-period");
        h.start_interval = duration("start-interval");
        if (flags_.has("retries")) {
            const std::string v = flags_.get("retries");
            static const std::regex integer("^[+-]?[0-9]{1,9}$");
            if (!std::regex_match(v, integer)) fail("HEALTHCHECK: invalid --retries value: \"" + v + "\"", "an integer");
            h.retries = std::stoi(v);
            if (*h.retries < 0) fail("HEALTHCHECK: --retries cannot be negative (" + v + ")", "use 0 for the default, or a positive count");
        }
        return h;
    }

    // Go's time.ParseDuration syntax ("1m30s", "500ms", "1.5h"); 0 means the default, anything
    // else must be at least 1ms (Docker's minimum).
    std::optional<std::chrono::nanoseconds> duration(const std::string& name) const {
        if (!flags_.has(name) || flags_.get(name).empty()) return std::nullopt;
        const std::string s = flags_.get(name);
        static const std::regex part("([0-9]*\\.?[0-9]*)(ns|us|\xC2\xB5s|ms|s|m|h)");
        static const std::map<std::string, double> unit = {{"ns", 1}, {"us", 1e3}, {"\xC2\xB5s", 1e3},
                                                           {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
        std::string_view rest = s;
        bool negative = false;
        if (!rest.empty() && (rest[0] == '-' || rest[0] == '+')) {
            negative = rest[0] == '-';
            rest.remove_prefix(1);
        }
        double total = 0;
        auto bad = [&]() { fail("HEALTHCHECK: invalid duration for --" + name + ": \"" + s + "\"", "a Go duration such as 30s, 1m30s or 500ms"); };
        if (rest == "0") return std::chrono::nanoseconds(0);
        // Length first: libstdc++'s regex recurses per character (a long value would overflow
        // the stack); no duration that fits in int64 nanoseconds needs 64 characters.
        if (rest.empty() || rest.size() > 64) bad();
        std::string text(rest);
        auto begin = text.cbegin();
        std::smatch m;
        while (begin != text.cend()) {
            if (!std::regex_search(begin, text.cend(), m, part, std::regex_constants::match_continuous)) bad();
            const std::string number = m[1].str();
            if (number.empty() || number == ".") bad();
            total += std::strtod(number.c_str(), nullptr) * unit.at(m[2].str());  // never throws, as stod would
            begin = m[0].second;
        }
        if (!(total < 0x1p63)) bad();  // beyond int64 nanoseconds (Go: "invalid duration")
        auto ns = std::chrono::nanoseconds(static_cast<std::int64_t>(negative ? -total : total));
        if (ns.count() != 0 && ns < std::chrono::milliseconds(1))
            fail("HEALTHCHECK: Interval \"" + name + "\" cannot be less than 1ms", "use 0 for the default, or 1ms and more");
        return ns;
    }

    const Node& node_;
    const std::string& file_;
    Flags flags_;
};

}  // namespace

namespace {

// with_context, plus the substitution hint for lexer errors that carry none.
template <typename Fn>
decltype(auto) with_hint_context(const std::string& context, Fn&& fn) {
    try {
        return std::forward<Fn>(fn)();
    } catch (Error& e) {
        e.add_context(context);
        if (e.hint().empty()) e.set_hint(substitution_hint());
        throw;
    }
}

// The stage a literal --from value names: a stage name (case-insensitive) or an index; nullopt
// for an image reference or a value that only expansion can tell. Throws for a bad index, as
// BuildKit's "invalid stage index".
std::optional<int> referenced_stage(const Dockerfile& df, const std::string& from, int line,
                                    const std::string& what) {
    if (from.empty() || from.find('$') != std::string::npos) return std::nullopt;
    std::string name = lower(from);
    for (const auto& s : df.stages)
        if (!s.name.empty() && s.name == name) return s.index;
    if (std::all_of(from.begin(), from.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        if (from.size() > 9 || std::stoi(from) >= static_cast<int>(df.stages.size()))
            fail_at(df.filename, line, what + ": invalid stage index " + from,
                    "the Dockerfile has " + std::to_string(df.stages.size()) + " stage(s), numbered from 0");
        return std::stoi(from);
    }
    return std::nullopt;
}

// COPY --from and RUN --mount from= make a stage depend on another; BuildKit refuses a cycle
// ("circular dependency detected on stage"). FROM an earlier stage's name is a dependency too.
void check_stage_references(const Dockerfile& df) {
    const std::size_t n = df.stages.size();
    std::vector<std::vector<std::pair<int, int>>> deps(n);  // (stage, line)
    for (const auto& stage : df.stages) {
        for (int i = 0; i < stage.index; ++i)
            if (!df.stages[i].name.empty() && df.stages[i].name == lower(stage.from.base))
                deps[stage.index].emplace_back(i, stage.line());
        for (const auto& ins : stage.instructions) {
            std::vector<std::pair<std::string, std::string>> refs;
            if (auto* copy = std::get_if<CopyInstr>(&ins.command)) refs.emplace_back(copy->from, "COPY --from");
            if (auto* run = std::get_if<RunInstr>(&ins.command))
                for (const auto& m : run->mounts)
                    if (auto it = m.options.find("from"); it != m.options.end())
                        refs.emplace_back(it->second, "RUN --mount from");
            for (const auto& [from, what] : refs) {
                auto target = referenced_stage(df, from, ins.line(), what + "=" + from);
                if (target) deps[stage.index].emplace_back(*target, ins.line());
            }
        }
    }
    // Depth-first search for a cycle: 0 = unseen, 1 = on the current path, 2 = done.
    std::vector<int> state(n, 0);
    std::function<void(int)> visit = [&](int s) {
        state[s] = 1;
        for (const auto& [dep, line] : deps[s]) {
            if (state[dep] == 1) {
                const Stage& st = df.stages[dep];
                fail_at(df.filename, line,
                        "circular dependency detected on stage: " + (st.name.empty() ? std::to_string(dep) : st.name),
                        "a stage cannot copy from itself or from a stage that depends on it");
            }
            if (state[dep] == 0) visit(dep);
        }
        state[s] = 2;
    };
    for (std::size_t s = 0; s < n; ++s)
        if (state[s] == 0) visit(static_cast<int>(s));
}

}  // namespace

Command parse_instruction(const Node& node, const std::string& filename) {
    return InstructionParser(node, filename).parse();
}

Dockerfile parse_dockerfile(std::string_view text, const std::string& filename) {
    ParsedDockerfile parsed = parse_dockerfile_text(text, filename);
    Dockerfile df;
    df.filename = filename;
    df.directives = parsed.directives;
    df.warnings = parsed.warnings;
    for (const Node& node : parsed.nodes) {
        Command cmd = parse_instruction(node, filename);
        if (auto* from = std::get_if<FromInstr>(&cmd)) {
            Stage stage;
            stage.index = static_cast<int>(df.stages.size());
            stage.name = from->stage_name;
            stage.from = *from;
            stage.from_node = node;
            for (const auto& other : df.stages)
                if (!stage.name.empty() && other.name == stage.name)
                    fail_at(filename, node.start_line, "duplicate stage name \"" + stage.name + "\"",
                            "stage names must be unique; the first was on line " + std::to_string(other.line()));
            df.stages.push_back(std::move(stage));
            continue;
        }
        if (df.stages.empty()) {
            auto* arg = std::get_if<ArgInstr>(&cmd);
            if (!arg)
                fail_at(filename, node.start_line, node.keyword + ": no build stage in current context",
                        "a Dockerfile starts with FROM; only ARG may come before the first FROM");
            for (const auto& decl : arg->args) df.global_args.emplace_back(decl, node.start_line);
            continue;
        }
        df.stages.back().instructions.push_back(Instruction{std::move(cmd), node});
    }
    if (df.stages.empty())
        throw Error(filename + ": no FROM instruction", "a Dockerfile needs at least one FROM line");
    check_stage_references(df);
    return df;
}

Dockerfile load_dockerfile(const std::string& path) {
    return parse_dockerfile(read_file(path, 16 * 1024 * 1024), path);
}

const std::vector<std::string>& predefined_proxy_args() {
    static const std::vector<std::string> names = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                                   "FTP_PROXY",  "ftp_proxy",  "NO_PROXY",    "no_proxy",
                                                   "ALL_PROXY",  "all_proxy"};
    return names;
}

const std::vector<std::string>& predefined_platform_args() {
    static const std::vector<std::string> names = {"BUILDPLATFORM",  "BUILDOS",  "BUILDARCH",  "BUILDVARIANT",
                                                   "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"};
    return names;
}

std::map<std::string, std::string> platform_args(const std::string& target_platform) {
    oci::Platform build = oci::Platform::host();
    oci::Platform target = target_platform.empty() ? build : oci::Platform::parse(target_platform);
    auto text = [](const oci::Platform& p) {
        return p.os + "/" + p.architecture + (p.variant.empty() ? "" : "/" + p.variant);
    };
    return {{"BUILDPLATFORM", text(build)},   {"BUILDOS", build.os},   {"BUILDARCH", build.architecture},
            {"BUILDVARIANT", build.variant},  {"TARGETPLATFORM", text(target)}, {"TARGETOS", target.os},
            {"TARGETARCH", target.architecture}, {"TARGETVARIANT", target.variant}};
}

const char* substitution_hint() {
    return "variables: $V ${V} ${V:-default} ${V-default} ${V:+alternative} ${V+alternative} ${V:?message}; "
           "define them with ARG, ENV or --build-arg NAME=VALUE";
}

std::map<std::string, std::string> global_arg_scope(const Dockerfile& df,
                                                    const std::map<std::string, std::string>& build_args,
                                                    const std::string& target_platform) {
    std::map<std::string, std::string> scope = platform_args(target_platform);
    // A --build-arg overrides an automatic platform arg too (BuildKit's setKVValue).
    for (auto& [name, value] : scope)
        if (auto it = build_args.find(name); it != build_args.end()) value = it->second;
    for (const auto& [decl, line] : df.global_args) {
        with_hint_context(df.filename + ":" + std::to_string(line), [&, &decl = decl] {
            std::string name = process(decl.name, env_from_map(scope), LexOptions{.escape = df.directives.escape}).word;
            if (auto it = build_args.find(name); it != build_args.end())
                scope[name] = it->second;
            else if (decl.value)
                scope[name] = process(*decl.value, env_from_map(scope), LexOptions{.escape = df.directives.escape}).word;
            else
                scope.erase(name);  // declared without a value and not given: unset
        });
    }
    return scope;
}

std::string expand_from(const Dockerfile& df, const Stage& stage, const std::map<std::string, std::string>& scope) {
    std::string base = with_hint_context(df.filename + ":" + std::to_string(stage.line()), [&] {
        return process(stage.from.base, env_from_map(scope), LexOptions{.escape = df.directives.escape}).word;
    });
    if (base.empty())
        fail_at(df.filename, stage.line(), "base name (" + stage.from.base + ") should not be blank",
                "give the variable a default (ARG NAME=image) or pass --build-arg NAME=image");
    return base;
}

const Stage& target_stage(const Dockerfile& df, const std::string& target) {
    if (target.empty()) return df.stages.back();
    for (const auto& s : df.stages)
        if (s.name == lower(target)) return s;
    std::vector<std::string> names;
    for (const auto& s : df.stages)
        if (!s.name.empty()) names.push_back(s.name);
    auto guess = suggest(lower(target), names);
    throw Error(df.filename + ": target stage \"" + target + "\" could not be found",
                guess ? "did you mean " + *guess + "?" : "name a stage with FROM image AS name");
}

}  // namespace aishell::composer
