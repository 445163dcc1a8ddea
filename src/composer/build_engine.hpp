// The build engine: a parsed Dockerfile becomes an image in the store. Only the stages the
// target needs run; each instruction is one step on the stage's image state (config JSON,
// layers, diff_ids, history): RUN in the runtime's container on the parent's layers, COPY/ADD
// and WORKDIR's mkdir as file steps in the user namespace (build_step.hpp), metadata
// instructions as config changes with empty_layer history entries. Every step goes through
// the step cache. The result is an OCI config and manifest, tagged with each -t name; a failed
// build tags nothing and removes the blobs, layer trees and cache entries it added.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "composer/build_mounts.hpp"
#include "oci/store.hpp"
#include "oci/types.hpp"

namespace aishell::composer {

struct BuildRequest {
    std::filesystem::path context;
    std::filesystem::path dockerfile;
    std::map<std::string, std::string> build_args;
    std::string target;
    std::string platform;
    std::vector<std::string> tags;
    // Set on the final image's config Labels after the Dockerfile's own (a Dockerfile LABEL of
    // the same key loses), as `docker build --label` with BuildKit: no history entry, no step,
    // so the step cache serves a rebuild with other labels (dockerfile2llb's opt.Labels).
    std::map<std::string, std::string> labels;
    // .dockerignore patterns the caller adds after the file's own (so they win): the chain
    // keeps aishell's own files in ~/.aishell (certs.d) out of the base build's context.
    std::vector<std::string> context_excludes;
    bool no_cache = false;
    bool quiet = false;                        // no step lines; RUN output only when a step fails
    std::string compression = "gzip";          // gzip | zstd
    std::optional<std::int64_t> source_date_epoch;
    std::vector<SecretSource> secrets;         // --secret: for RUN --mount=type=secret
    std::vector<SshSource> ssh;                // --ssh: for RUN --mount=type=ssh
    // Pulls an image reference that is not in the store; returns its index.json name.
    std::function<std::string(oci::Store&, const std::string&)> pull;
    // Called under the store lock that tags the image, right after the tags, with that lock and
    // the manifest: a caller whose own record must name the image in the same hold writes it
    // here (the chain: a prune, which takes that lock, sees both the tag and the record that
    // vouches for it, or neither). If it throws, the build fails and its tags are taken back.
    std::function<void(const oci::StoreLock&, const oci::Descriptor&)> on_tagged;
};

struct BuildResult {
    oci::Digest image_id;      // the config digest, as Docker shows it
    oci::Descriptor manifest;
};

// Runs the build; throws Error ("[3/7] RUN ...: exit status 2") when a step fails.
BuildResult build_image(oci::Store& store, const BuildRequest& request);

}  // namespace aishell::composer
