// A build stage's image state and the pure changes the Dockerfile's instructions make to it:
// the config document (Env, Labels, Cmd/Entrypoint, Healthcheck, WorkingDir, ...), history
// entries, and the --label values of the request. Nothing here touches the store or the
// filesystem, so tests/unit/build_config_test.cpp checks each change as BuildKit's
// dockerfile2llb makes it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "composer/instructions.hpp"
#include "oci/digest.hpp"
#include "oci/types.hpp"

namespace aishell::composer {

// A stage's image as the steps change it.
struct ImageState {
    nlohmann::json config;                 // the whole config document
    std::vector<oci::Descriptor> layers;   // bottom first
    std::vector<oci::Digest> diff_ids;
    oci::Digest key;                       // cache chain key of this state
    bool cmd_set = false;                  // CMD given in this stage (ENTRYPOINT then keeps it)
};

// The empty image of `FROM scratch` for the host's platform.
ImageState scratch_state();

// s.config["config"], made an object when missing.
nlohmann::json& config_object(ImageState& s);
// config[key] as a string, "" when absent (WorkingDir, User, ...).
std::string config_string(const ImageState& s, const char* key);
std::vector<std::string> env_list(const ImageState& s);
// Sets KEY=value in Env, replacing the value of an existing KEY in place.
void set_env(ImageState& s, const std::string& key, const std::string& value);
// The ARGs in scope under the config's Env: ENV wins over an ARG of the same name (BuildKit).
std::map<std::string, std::string> expansion_env(const ImageState& s, const std::map<std::string, std::string>& args);
// BuildKit (dockerfile2llb's toDispatchState) gives every stage whose base has no PATH the
// default one, in the image's config too, not only in RUN's environment.
void ensure_default_path(ImageState& s);
// Config.Shell, or /bin/sh -c.
std::vector<std::string> shell_of(const ImageState& s);
// A CMD/ENTRYPOINT's argv: the exec form as written, the shell form as SHELL + the joined words.
std::vector<std::string> command_args(const ImageState& s, const CommandLine& c);
// argv as the history shows it: a compact JSON array (BuildKit's text).
std::string json_words(const std::vector<std::string>& v);

// The metadata instructions (their arguments already expanded); each returns the history's
// created_by text for the step.
std::string apply_env(ImageState& s, const std::vector<std::pair<std::string, std::string>>& pairs);
std::string apply_labels(ImageState& s, const std::vector<std::pair<std::string, std::string>>& labels);
std::string apply_cmd(ImageState& s, const std::vector<std::string>& argv);
std::string apply_entrypoint(ImageState& s, const std::vector<std::string>& argv);
std::string apply_healthcheck(ImageState& s, const HealthcheckInstr& h);
std::string apply_onbuild(ImageState& s, const std::string& expression);
// Keys of an object in the config (ExposedPorts, Volumes) with {} as value.
void add_config_keys(ImageState& s, const char* field, const std::vector<std::string>& keys);
// The request's --label values, over the Dockerfile's (no history entry: build_engine.hpp).
void apply_request_labels(ImageState& s, const std::map<std::string, std::string>& labels);

// BuildKit's system.NormalizeWorkdir (as Docker's classic builder): an absolute path is kept
// as written (`/a/b/` stays `/a/b/`), a relative one is joined to the current WORKDIR and
// cleaned as Go's path.Join does.
std::string normalize_workdir(const ImageState& s, const std::string& requested);
// path, relative ones under WORKDIR (or /).
std::string absolute_in_workdir(const ImageState& s, const std::string& path);

// The "2009-02-13T23:31:30Z" form of seconds since the epoch.
std::string rfc3339(std::int64_t seconds);
// One history entry as BuildKit writes it (comment buildkit.dockerfile.v0; empty_layer for a
// step that made no layer).
nlohmann::json history_entry(const std::string& created, const std::string& created_by, bool empty_layer);
// Appends the entry and makes created the config's date.
void add_history(ImageState& s, const std::string& created, const std::string& created_by, bool empty_layer);

// The config as the image gets it: rootfs from the state's diff_ids, the fields of Docker's
// classic builder that BuildKit does not write removed.
nlohmann::json final_config(const ImageState& s);

}  // namespace aishell::composer
