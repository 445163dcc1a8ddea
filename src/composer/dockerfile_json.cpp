// Rendering of a parsed Dockerfile for `aishell build --check`, with a static pass that expands
// what can be known before a build: ARG (global and per stage, --build-arg overriding), ENV,
// and the env a stage inherits from an earlier stage it is built FROM.
#include "composer/dockerfile_json.hpp"

#include <algorithm>
#include <optional>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "oci/types.hpp"

namespace aishell::composer {

namespace {

using nlohmann::json;

json flags_json(const Node& node) {
    json out = json::object();
    for (const auto& word : node.flags) {
        std::string body = word.substr(2);
        auto eq = body.find('=');
        std::string name = body.substr(0, eq);
        if (name == "mount" || name == "exclude") {
            out[name].push_back(body.substr(eq + 1));
        } else if (name == "link" || name == "keep-git-dir") {
            out[name] = eq == std::string::npos || body.substr(eq + 1) == "true";
        } else {
            out[name] = eq == std::string::npos ? "" : body.substr(eq + 1);
        }
    }
    return out;
}

json args_json(const Node& node) {
    json out = json::array();
    if (node.keyword == "ENV" || node.keyword == "LABEL") {
        for (std::size_t i = 0; i + 3 <= node.args.size(); i += 3) out.push_back(node.args[i] + "=" + node.args[i + 1]);
    } else if (node.keyword == "ONBUILD") {
        if (node.next) out.push_back(node.next->original);
    } else {
        for (const auto& a : node.args) out.push_back(a);
    }
    return out;
}

json heredocs_json(const std::vector<Heredoc>& docs) {
    json out = json::array();
    for (const auto& d : docs) {
        json h = {{"name", d.name}, {"content", d.content}, {"expand", d.expand}, {"chomp", d.chomp}};
        if (d.fd) h["fd"] = d.fd;
        out.push_back(std::move(h));
    }
    return out;
}

// The variables known while walking one stage: ENV wins over ARG of the same name, as Docker
// documents ("Environment variables defined using ENV always override an ARG").
struct StageScope {
    std::map<std::string, std::string> env;
    std::map<std::string, std::string> args;
    bool image_env_unknown = false;  // built FROM an image whose config Env we have not read
};

class StaticExpander {
public:
    StaticExpander(const Dockerfile& df, const CheckOptions& options)
        : df_(df), options_(options), global_(global_arg_scope(df, options.build_args, options.target_platform)) {
        for (const auto& [decl, line] : df.global_args) global_names_.insert(decl.name);
    }

    const std::map<std::string, std::string>& global() const { return global_; }

    json stage(const Stage& stage, std::vector<StageScope>& finished) {
        StageScope scope;
        std::string base = expand_from(df_, stage, global_);
        if (lower(base) == "scratch") {
            scope.image_env_unknown = false;
        } else if (const StageScope* parent = earlier_stage(base, stage.index, finished)) {
            scope.env = parent->env;
            scope.image_env_unknown = parent->image_env_unknown;
        } else {
            scope.image_env_unknown = true;
        }
        json out = {{"name", stage.name.empty() ? json(nullptr) : json(stage.name)},
                    {"index", stage.index},
                    {"from", base},
                    {"from_raw", stage.from.base},
                    {"line", stage.line()}};
        if (!stage.from.platform.empty()) {
            std::string platform = expand_global(stage.from.platform, stage.line());
            try {
                (void)oci::Platform::parse(platform);
            } catch (const Error& e) {
                fail_at(df_.filename, stage.line(), "FROM --platform=" + platform + ": " + e.message(),
                        "write os/arch[/variant], e.g. linux/amd64 or $BUILDPLATFORM");
            }
            out["platform"] = platform;
        }
        json list = json::array();
        for (const auto& ins : stage.instructions) list.push_back(instruction(ins, scope));
        out["instructions"] = std::move(list);
        finished.push_back(std::move(scope));
        return out;
    }

    std::set<std::string> declared() const {
        std::set<std::string> names = global_names_;
        names.insert(stage_arg_names_.begin(), stage_arg_names_.end());
        return names;
    }

private:
    static std::string lower(std::string s) {
        for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return s;
    }

    const StageScope* earlier_stage(const std::string& base, int index, const std::vector<StageScope>& finished) {
        for (int i = 0; i < index && i < static_cast<int>(finished.size()); ++i)
            if (!df_.stages[i].name.empty() && df_.stages[i].name == lower(base)) return &finished[i];
        return nullptr;
    }

    std::string expand_global(const std::string& word, int line) {
        try {
            return process(word, env_from_map(global_), opts()).word;
        } catch (Error& e) {
            e.add_context(df_.filename + ":" + std::to_string(line));
            if (e.hint().empty()) e.set_hint(substitution_hint());
            throw;
        }
    }

    LexOptions opts() const { return LexOptions{.escape = df_.directives.escape}; }

    // Expands one word in scope; records variables the Dockerfile does not define.
    LexResult expand(const std::string& word, const StageScope& scope, const Instruction& ins,
                     std::set<std::string>& unresolved, bool heredoc_body = false) {
        EnvLookup lookup = [&scope](const std::string& name) -> std::optional<std::string> {
            if (auto it = scope.env.find(name); it != scope.env.end()) return it->second;
            if (auto it = scope.args.find(name); it != scope.args.end()) return it->second;
            return std::nullopt;
        };
        try {
            // While the base image's Env is unknown, a variable the Dockerfile does not define
            // may still be set at build time: leave its reference as written.
            LexOptions options = opts();
            options.skip_unset = scope.image_env_unknown;
            if (heredoc_body) {
                // BuildKit's ExpandRaw: the escape is always "\\" and quotes are plain text.
                options.escape = '\\';
                options.skip_quotes = true;
            }
            LexResult r = process(word, lookup, options);
            unresolved.insert(r.unmatched.begin(), r.unmatched.end());
            return r;
        } catch (Error& e) {
            e.add_context(df_.filename + ":" + std::to_string(ins.line()) + ": " + ins.name());
            if (e.hint().empty()) e.set_hint(substitution_hint());
            throw;
        }
    }

    // The instruction's arguments as expanded (ENV and ARG update scope as they go), checking
    // the EXPOSE and STOPSIGNAL values; nullopt for an instruction whose arguments do not expand.
    std::optional<json> expanded_args(const Instruction& ins, StageScope& scope, std::set<std::string>& unresolved) {
        const Node& node = ins.node;
        json expanded = json::array();
        bool expands = true;
        auto word = [&](const std::string& w) { return expand(w, scope, ins, unresolved).word; };
        std::visit(
            [&](const auto& cmd) {
                using T = std::decay_t<decltype(cmd)>;
                if constexpr (std::is_same_v<T, EnvInstr>) {
                    // Every pair expands with the values from before this instruction
                    // (ENV a=1 b=$a gives b the old a), as Docker documents.
                    std::vector<std::pair<std::string, std::string>> pairs;
                    for (const auto& kv : cmd.env) pairs.emplace_back(word(kv.key), word(kv.value));
                    for (auto& [key, value] : pairs) {
                        expanded.push_back(key + "=" + value);
                        scope.env[key] = value;
                    }
                } else if constexpr (std::is_same_v<T, LabelInstr>) {
                    for (const auto& kv : cmd.labels) expanded.push_back(word(kv.key) + "=" + word(kv.value));
                } else if constexpr (std::is_same_v<T, ArgInstr>) {
                    // As for ENV, the whole instruction expands before any of its ARGs is set.
                    const StageScope before = scope;
                    auto word_before = [&](const std::string& w) { return expand(w, before, ins, unresolved).word; };
                    for (const auto& decl : cmd.args) expanded.push_back(declare_arg(decl, scope, word_before));
                } else if constexpr (std::is_same_v<T, ExposeInstr>) {
                    for (const auto& p : cmd.ports)
                        for (auto& w : expand(p, scope, ins, unresolved).words) {
                            if (w.find('$') == std::string::npos)
                                if (auto error = port_spec_error(w))
                                    fail_at(df_.filename, ins.line(), "EXPOSE " + p + ": " + *error,
                                            "PORT[/PROTO] or FROM-TO[/PROTO], e.g. 8080/tcp");
                            expanded.push_back(w);
                        }
                } else if constexpr (std::is_same_v<T, CopyInstr> || std::is_same_v<T, AddInstr>) {
                    // A heredoc opener names inline content, not a path: BuildKit keeps it apart.
                    for (const auto& s : cmd.sources)
                        expanded.push_back(!node.json && parse_heredoc_word(s) ? s : word(s));
                    expanded.push_back(word(cmd.dest));
                } else if constexpr (std::is_same_v<T, VolumeInstr>) {
                    for (const auto& v : cmd.volumes) expanded.push_back(word(v));
                } else if constexpr (std::is_same_v<T, UserInstr>) {
                    expanded.push_back(word(cmd.user));
                } else if constexpr (std::is_same_v<T, WorkdirInstr>) {
                    expanded.push_back(word(cmd.path));
                } else if constexpr (std::is_same_v<T, StopsignalInstr>) {
                    std::string signal = word(cmd.signal);
                    if (signal.find('$') == std::string::npos)
                        if (auto error = signal_error(signal))
                            fail_at(df_.filename, ins.line(), "STOPSIGNAL " + cmd.signal + ": " + *error,
                                    "a name such as SIGTERM or TERM, or a number");
                    expanded.push_back(signal);
                } else {
                    expands = false;
                }
            },
            ins.command);
        if (!expands) return std::nullopt;
        return expanded;
    }

    json instruction(const Instruction& ins, StageScope& scope) {
        const Node& node = ins.node;
        json out = {{"name", node.keyword}, {"line", node.start_line}, {"flags", flags_json(node)},
                    {"args", args_json(node)}, {"json", node.json}};
        const Node& doc_node = node.keyword == "ONBUILD" && node.next ? *node.next : node;
        if (!doc_node.heredocs.empty()) out["heredocs"] = heredocs_json(doc_node.heredocs);
        std::set<std::string> unresolved;
        if (auto expanded = expanded_args(ins, scope, unresolved)) out["expanded"] = std::move(*expanded);
        auto word = [&](const std::string& w) { return expand(w, scope, ins, unresolved).word; };
        json flags = expanded_flags(ins, word);
        if (!flags.empty()) out["expanded_flags"] = std::move(flags);
        // COPY/ADD heredoc bodies expand unless the delimiter was quoted; RUN leaves its bodies
        // to the shell.
        if ((node.keyword == "COPY" || node.keyword == "ADD") && out.contains("heredocs"))
            for (std::size_t k = 0; k < node.heredocs.size(); ++k)
                if (node.heredocs[k].expand)
                    out["heredocs"][k]["expanded"] = expand(node.heredocs[k].content, scope, ins, unresolved, true).word;
        if (!unresolved.empty()) out["unresolved"] = unresolved;
        return out;
    }

    // The flag values BuildKit expands: COPY --from/--chown/--chmod, ADD --chown/--chmod/--checksum,
    // and RUN --mount option values (each mount shown with its canonical options and defaults).
    template <typename Word>
    json expanded_flags(const Instruction& ins, Word& word) {
        json out = json::object();
        auto add = [&](const char* name, const std::string& value) {
            if (!value.empty()) out[name] = word(value);
        };
        if (const auto* copy = std::get_if<CopyInstr>(&ins.command)) {
            add("from", copy->from);
            add("chown", copy->chown);
            add("chmod", copy->chmod);
        } else if (const auto* add_instr = std::get_if<AddInstr>(&ins.command)) {
            add("chown", add_instr->chown);
            add("chmod", add_instr->chmod);
            add("checksum", add_instr->checksum);
        } else if (const auto* run = std::get_if<RunInstr>(&ins.command)) {
            for (const auto& mount : run->mounts) {
                json m = {{"type", mount.type}};
                for (const auto& [key, value] : mount.options) m[key] = word(value);
                out["mount"].push_back(std::move(m));
            }
        }
        return out;
    }

    // ARG inside a stage: --build-arg wins, then a global ARG or platform arg of that name
    // (an ARG without a value re-declares it), then the default.
    template <typename Word>
    std::string declare_arg(const ArgDecl& decl, StageScope& scope, Word& word) {
        std::string name = word(decl.name);
        stage_arg_names_.insert(name);
        std::optional<std::string> value;
        if (auto it = options_.build_args.find(name); it != options_.build_args.end())
            value = it->second;
        else if (!decl.value && global_.count(name))
            value = global_.at(name);
        else if (decl.value)
            value = word(*decl.value);
        if (!value) {
            scope.args.erase(name);
            return name;
        }
        scope.args[name] = *value;
        return name + "=" + *value;
    }

    const Dockerfile& df_;
    const CheckOptions& options_;
    std::map<std::string, std::string> global_;
    std::set<std::string> global_names_;
    std::set<std::string> stage_arg_names_;
};

std::vector<std::string> unused_build_args(const Dockerfile& df, const CheckOptions& options,
                                           const std::set<std::string>& declared) {
    std::vector<std::string> out;
    for (const auto& [name, value] : options.build_args) {
        const auto& proxies = predefined_proxy_args();
        if (declared.count(name) || std::find(proxies.begin(), proxies.end(), name) != proxies.end()) continue;
        out.push_back(df.filename + ": build-arg " + name + " was not consumed by any ARG");
    }
    return out;
}

}  // namespace

json dockerfile_to_json(const Dockerfile& df, const CheckOptions& options) {
    StaticExpander expander(df, options);
    json directives = {{"escape", std::string(1, df.directives.escape)}};
    if (df.directives.syntax) directives["syntax"] = *df.directives.syntax;
    if (df.directives.check) directives["check"] = *df.directives.check;
    json args = json::array();
    for (const auto& [decl, line] : df.global_args) {
        auto it = expander.global().find(decl.name);
        args.push_back({{"name", decl.name},
                        {"value", decl.value ? json(*decl.value) : json(nullptr)},
                        {"line", line},
                        {"expanded", it == expander.global().end() ? json(nullptr) : json(it->second)}});
    }
    json stages = json::array();
    std::vector<StageScope> finished;
    for (const auto& stage : df.stages) stages.push_back(expander.stage(stage, finished));
    json warnings = df.warnings;
    for (auto& w : unused_build_args(df, options, expander.declared())) warnings.push_back(std::move(w));
    return {{"directives", directives}, {"args", args}, {"stages", stages}, {"warnings", warnings}};
}

std::string dockerfile_to_text(const Dockerfile& df, const CheckOptions& options) {
    json j = dockerfile_to_json(df, options);
    std::ostringstream out;
    out << df.filename << ": " << df.stages.size() << (df.stages.size() == 1 ? " stage" : " stages");
    if (df.directives.syntax) out << ", syntax=" << *df.directives.syntax;
    out << "\n";
    for (const auto& a : j["args"])
        out << "  " << a["line"].get<int>() << "\tARG " << a["name"].get<std::string>()
            << (a["expanded"].is_null() ? "" : "=" + a["expanded"].get<std::string>()) << "  (global)\n";
    std::size_t i = 0;
    for (const auto& s : j["stages"]) {
        const Stage& stage = df.stages[i++];
        out << "stage " << s["index"].get<int>();
        if (!s["name"].is_null()) out << " \"" << s["name"].get<std::string>() << "\"";
        out << ": FROM " << s["from"].get<std::string>();
        if (s.contains("platform")) out << " (platform " << s["platform"].get<std::string>() << ")";
        out << "  [line " << s["line"].get<int>() << "]\n";
        for (std::size_t k = 0; k < stage.instructions.size(); ++k) {
            const auto& ins = stage.instructions[k];
            out << "  " << ins.line() << "\t" << ins.node.original << "\n";
            const auto& ij = s["instructions"][k];
            if (ij.contains("heredocs"))
                for (const auto& h : ij["heredocs"]) {
                    const std::string content = h["content"].get<std::string>();
                    out << "  \t  <<" << h["name"].get<std::string>() << ": "
                        << std::count(content.begin(), content.end(), '\n') << " line(s)"
                        << (h["expand"].get<bool>() ? "" : ", not expanded") << "\n";
                }
        }
    }
    for (const auto& w : j["warnings"]) out << "warning: " << w.get<std::string>() << "\n";
    return out.str();
}

}  // namespace aishell::composer
