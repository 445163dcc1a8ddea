// The step spec: what the engine (build_engine.cpp) asks of its in-namespace step helper
// (build_step.cpp) for one layer step, as one typed struct with its encoding, used by both
// sides (bubblewrap's small typed protocol is the model: one definition, a version, nothing
// read by string at the far end). The wire form is MessagePack (oci::to_message) of a map, so a
// RUN command or a path that is not UTF-8 reaches the helper byte for byte. Both ends are the
// same binary, but an old helper may still be serving a build when aishell is upgraded under
// it: the version makes that an error instead of a misread step.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "composer/build_copy.hpp"
#include "oci/owner_table.hpp"

namespace aishell::composer {

// COPY/ADD: what to copy (the request), from where: the context or a download dir (src_dir,
// with the .dockerignore patterns that shape it) or a stage's/image's layers (src_layers).
struct CopyStepSpec {
    CopyRequest request;
    std::string src_dir;
    std::optional<std::vector<std::string>> src_layers;  // top first; set: copy from these
    std::optional<std::vector<std::string>> ignore;
};

// WORKDIR's mkdir: the path, made for owner (root when unset).
struct MkdirStepSpec {
    std::string path;
    std::optional<CopyOwner> owner;
};

struct StepSpec {
    static constexpr std::uint32_t kVersion = 1;
    std::uint32_t version = kVersion;
    std::string store;                 // the store's root
    std::string lease;                 // the build's lease file: the step's blob and tree go there
    std::string run_dir;               // the step's work dir: upper/, work/, ...
    std::string compression = "gzip";  // gzip | zstd
    std::optional<std::int64_t> clamp; // SOURCE_DATE_EPOCH: mtimes clamped to it
    std::vector<std::string> lower;    // the parent's layer dirs, top first
    // One of: a file operation (copy, mkdir), or a RUN's commit (stubs to remove first).
    std::optional<CopyStepSpec> copy;
    std::optional<MkdirStepSpec> mkdir;
    std::optional<std::vector<std::string>> stubs;
    std::optional<oci::LayerOwner> owner;  // a RUN under an emulated USER: new entries' owner
};

nlohmann::json step_spec_to_json(const StepSpec& spec);
// Throws Error on a version other than kVersion or a malformed spec.
StepSpec step_spec_from_json(const nlohmann::json& j);

// The wire form (MessagePack).
std::string encode_step_spec(const StepSpec& spec);
StepSpec decode_step_spec(std::string_view bytes);

}  // namespace aishell::composer
