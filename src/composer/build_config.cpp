// The image state's config changes (see build_config.hpp).
#include "composer/build_config.hpp"

#include <ctime>
#include <filesystem>

#include "oci/json_text.hpp"
#include "runtime/process.hpp"

namespace aishell::composer {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// config[field], made an object when it is missing or not one.
json& object_field(ImageState& s, const char* field) {
    json& c = config_object(s);
    if (!c.contains(field) || !c[field].is_object()) c[field] = json::object();
    return c[field];
}

std::string joined_words(const std::vector<std::string>& words) {
    std::string joined;
    for (const auto& w : words) joined += (joined.empty() ? "" : " ") + w;
    return joined;
}

}  // namespace

ImageState scratch_state() {
    ImageState s;
    auto p = oci::Platform::host();
    s.config = {{"architecture", p.architecture}, {"os", p.os}, {"config", json::object()},
                {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}}, {"history", json::array()}};
    if (!p.variant.empty()) s.config["variant"] = p.variant;
    return s;
}

json& config_object(ImageState& s) {
    if (!s.config.contains("config") || !s.config["config"].is_object()) s.config["config"] = json::object();
    return s.config["config"];
}

std::string config_string(const ImageState& s, const char* key) {
    if (!s.config.contains("config")) return {};
    const json& c = s.config["config"];
    return c.contains(key) && c[key].is_string() ? c[key].get<std::string>() : std::string();
}

std::vector<std::string> env_list(const ImageState& s) {
    if (!s.config.contains("config") || !s.config["config"].contains("Env") || !s.config["config"]["Env"].is_array())
        return {};
    return s.config["config"]["Env"].get<std::vector<std::string>>();
}

void set_env(ImageState& s, const std::string& key, const std::string& value) {
    auto env = env_list(s);
    bool found = false;
    for (auto& e : env)
        if (e.substr(0, e.find('=')) == key) {
            e = key + "=" + value;
            found = true;
        }
    if (!found) env.push_back(key + "=" + value);
    config_object(s)["Env"] = env;
}

std::map<std::string, std::string> expansion_env(const ImageState& s, const std::map<std::string, std::string>& args) {
    std::map<std::string, std::string> env = args;
    for (const auto& e : env_list(s)) {
        auto eq = e.find('=');
        env[e.substr(0, eq)] = eq == std::string::npos ? "" : e.substr(eq + 1);
    }
    return env;
}

void ensure_default_path(ImageState& s) {
    for (const auto& e : env_list(s))
        if (e.substr(0, e.find('=')) == "PATH") return;
    set_env(s, "PATH", runtime::kDefaultPath);
}

std::vector<std::string> shell_of(const ImageState& s) {
    if (s.config.contains("config") && s.config["config"].contains("Shell") && s.config["config"]["Shell"].is_array())
        return s.config["config"]["Shell"].get<std::vector<std::string>>();
    return {"/bin/sh", "-c"};
}

std::vector<std::string> command_args(const ImageState& s, const CommandLine& c) {
    if (c.exec_form) return c.args;
    std::vector<std::string> argv = shell_of(s);
    argv.push_back(joined_words(c.args));
    return argv;
}

std::string json_words(const std::vector<std::string>& v) { return oci::json_key_text(json(v)); }

std::string apply_env(ImageState& s, const std::vector<std::pair<std::string, std::string>>& pairs) {
    std::string text = "ENV";
    for (const auto& [key, value] : pairs) {
        set_env(s, key, value);
        text += " " + key + "=" + value;
    }
    return text;
}

std::string apply_labels(ImageState& s, const std::vector<std::pair<std::string, std::string>>& labels) {
    std::string text = "LABEL";
    for (const auto& [key, value] : labels) {
        object_field(s, "Labels")[key] = value;
        text += " " + key + "=" + value;
    }
    return text;
}

std::string apply_cmd(ImageState& s, const std::vector<std::string>& argv) {
    config_object(s)["Cmd"] = argv;
    s.cmd_set = true;
    return "CMD " + json_words(argv);
}

std::string apply_entrypoint(ImageState& s, const std::vector<std::string>& argv) {
    config_object(s)["Entrypoint"] = argv;
    // An ENTRYPOINT resets the Cmd inherited from the base, not one this stage set.
    if (!s.cmd_set) config_object(s).erase("Cmd");
    return "ENTRYPOINT " + json_words(argv);
}

std::string apply_healthcheck(ImageState& s, const HealthcheckInstr& h) {
    json hc = json::object();
    if (h.none) {
        hc["Test"] = {"NONE"};
    } else {
        std::vector<std::string> test;
        if (h.test.exec_form) {
            test = {"CMD"};
            test.insert(test.end(), h.test.args.begin(), h.test.args.end());
        } else {
            test = {"CMD-SHELL", joined_words(h.test.args)};
        }
        hc["Test"] = test;
        // Durations in nanoseconds, as Docker's container.HealthConfig.
        if (h.interval) hc["Interval"] = h.interval->count();
        if (h.timeout) hc["Timeout"] = h.timeout->count();
        if (h.start_period) hc["StartPeriod"] = h.start_period->count();
        if (h.start_interval) hc["StartInterval"] = h.start_interval->count();
        if (h.retries) hc["Retries"] = *h.retries;
    }
    config_object(s)["Healthcheck"] = hc;
    return "HEALTHCHECK " + oci::json_key_text(hc["Test"]);
}

std::string apply_onbuild(ImageState& s, const std::string& expression) {
    json& c = config_object(s);
    if (!c.contains("OnBuild") || !c["OnBuild"].is_array()) c["OnBuild"] = json::array();
    c["OnBuild"].push_back(expression);
    return "ONBUILD " + expression;
}

void add_config_keys(ImageState& s, const char* field, const std::vector<std::string>& keys) {
    json& o = object_field(s, field);
    for (const auto& k : keys) o[k] = json::object();
}

void apply_request_labels(ImageState& s, const std::map<std::string, std::string>& labels) {
    if (labels.empty()) return;
    json& o = object_field(s, "Labels");
    for (const auto& [key, value] : labels) o[key] = value;
}

std::string normalize_workdir(const ImageState& s, const std::string& requested) {
    if (!requested.empty() && requested[0] == '/') return requested;
    std::string wd = config_string(s, "WorkingDir");
    std::string joined = (fs::path("/") / wd / requested).lexically_normal().string();
    while (joined.size() > 1 && joined.back() == '/') joined.pop_back();
    return joined;
}

std::string absolute_in_workdir(const ImageState& s, const std::string& path) {
    if (!path.empty() && path[0] == '/') return path;
    std::string wd = config_string(s, "WorkingDir");
    if (wd.empty()) wd = "/";
    return (fs::path(wd) / path).string();
}

std::string rfc3339(std::int64_t seconds) {
    std::time_t t = static_cast<std::time_t>(seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

json history_entry(const std::string& created, const std::string& created_by, bool empty_layer) {
    json h = {{"created", created}, {"created_by", created_by}, {"comment", "buildkit.dockerfile.v0"}};
    if (empty_layer) h["empty_layer"] = true;
    return h;
}

void add_history(ImageState& s, const std::string& created, const std::string& created_by, bool empty_layer) {
    if (!s.config.contains("history") || !s.config["history"].is_array()) s.config["history"] = json::array();
    s.config["history"].push_back(history_entry(created, created_by, empty_layer));
    s.config["created"] = created;
}

json final_config(const ImageState& s) {
    json c = s.config;
    json ids = json::array();
    for (const auto& d : s.diff_ids) ids.push_back(d.str());
    c["rootfs"] = {{"type", "layers"}, {"diff_ids", ids}};
    for (const char* classic : {"container_config", "container", "docker_version"}) c.erase(classic);
    return c;
}

}  // namespace aishell::composer
