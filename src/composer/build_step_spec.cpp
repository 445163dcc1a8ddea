// The step spec's encoding (see build_step_spec.hpp).
#include "composer/build_step_spec.hpp"

#include "common/error.hpp"
#include "oci/json_text.hpp"

namespace aishell::composer {

using nlohmann::json;

namespace {

json owner_json(std::uint32_t uid, std::uint32_t gid) { return json::array({uid, gid}); }

std::optional<CopyOwner> owner_from(const json& j) {
    if (!j.is_array()) return std::nullopt;
    return CopyOwner{j.at(0).get<std::uint32_t>(), j.at(1).get<std::uint32_t>()};
}

json copy_to_json(const CopyStepSpec& c) {
    const CopyRequest& r = c.request;
    json j = {{"sources", r.sources},       {"dest", r.dest},         {"add", r.extract_archives},
              {"instruction", r.instruction}, {"heredocs", r.heredocs}, {"preserve_owner", r.preserve_owner},
              {"src_dir", c.src_dir}};
    if (c.src_layers) j["src_layers"] = *c.src_layers;
    if (r.chown) j["chown"] = owner_json(r.chown->uid, r.chown->gid);
    if (r.chmod) j["chmod"] = *r.chmod;
    if (c.ignore) j["ignore"] = *c.ignore;
    return j;
}

CopyStepSpec copy_from_json(const json& j) {
    CopyStepSpec c;
    CopyRequest& r = c.request;
    r.sources = j.at("sources").get<std::vector<std::string>>();
    r.dest = j.at("dest").get<std::string>();
    r.extract_archives = j.at("add").get<bool>();
    r.instruction = j.at("instruction").get<std::string>();
    r.heredocs = j.at("heredocs").get<std::map<std::string, std::string>>();
    r.preserve_owner = j.at("preserve_owner").get<bool>();
    r.chown = owner_from(j.value("chown", json()));
    if (j.contains("chmod")) r.chmod = j["chmod"].get<mode_t>();
    c.src_dir = j.at("src_dir").get<std::string>();
    if (j.contains("src_layers")) c.src_layers = j["src_layers"].get<std::vector<std::string>>();
    if (j.contains("ignore")) c.ignore = j["ignore"].get<std::vector<std::string>>();
    return c;
}

void put_optionals(json& j, const StepSpec& s) {
    if (s.clamp) j["clamp"] = *s.clamp;
    if (s.copy) j["copy"] = copy_to_json(*s.copy);
    if (s.mkdir) {
        j["mkdir"] = {{"path", s.mkdir->path}};
        if (s.mkdir->owner) j["mkdir"]["chown"] = owner_json(s.mkdir->owner->uid, s.mkdir->owner->gid);
    }
    if (s.stubs) j["stubs"] = *s.stubs;
    if (s.owner) j["owner"] = owner_json(s.owner->uid, s.owner->gid);
}

void get_optionals(const json& j, StepSpec& s) {
    if (j.contains("clamp")) s.clamp = j["clamp"].get<std::int64_t>();
    if (j.contains("copy")) s.copy = copy_from_json(j["copy"]);
    if (j.contains("mkdir"))
        s.mkdir = MkdirStepSpec{j["mkdir"].at("path").get<std::string>(), owner_from(j["mkdir"].value("chown", json()))};
    if (j.contains("stubs")) s.stubs = j["stubs"].get<std::vector<std::string>>();
    if (auto o = owner_from(j.value("owner", json()))) s.owner = oci::LayerOwner{o->uid, o->gid};
}

}  // namespace

json step_spec_to_json(const StepSpec& s) {
    json j = {{"version", s.version}, {"store", s.store},     {"lease", s.lease},
              {"run_dir", s.run_dir}, {"compression", s.compression}, {"lower", s.lower}};
    put_optionals(j, s);
    return j;
}

StepSpec step_spec_from_json(const json& j) {
    if (!j.is_object()) throw Error("build step helper: the step spec is not a map");
    const std::uint32_t version = j.value("version", 0u);
    if (version != StepSpec::kVersion)
        throw Error("build step helper: step spec version " + std::to_string(version) + ", this aishell reads " +
                        std::to_string(StepSpec::kVersion),
                    "the build and its helper are different aishell versions; run the build again");
    try {
        StepSpec s;
        s.store = j.at("store").get<std::string>();
        s.lease = j.at("lease").get<std::string>();
        s.run_dir = j.at("run_dir").get<std::string>();
        s.compression = j.at("compression").get<std::string>();
        s.lower = j.at("lower").get<std::vector<std::string>>();
        get_optionals(j, s);
        return s;
    } catch (const json::exception& e) {
        throw Error(std::string("build step helper: malformed step spec: ") + e.what());
    }
}

std::string encode_step_spec(const StepSpec& spec) { return oci::to_message(step_spec_to_json(spec)); }

StepSpec decode_step_spec(std::string_view bytes) { return step_spec_from_json(oci::from_message(bytes)); }

}  // namespace aishell::composer
