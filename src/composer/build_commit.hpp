// Committing a build's result: the final stage's config (build_config.hpp: final_config) and
// an OCI manifest of its layers are written as blobs, and each -t name tagged, recorded in the
// rollback so a build that fails after it leaves the tags as they were.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "composer/build_config.hpp"
#include "composer/build_engine.hpp"
#include "composer/build_rollback.hpp"
#include "oci/store.hpp"
#include "oci/types.hpp"

namespace aishell::composer {

// The manifest of an image with these layers and config: OCI media types (a Docker layer type
// becomes its OCI equivalent), the descriptors' annotations, urls and platform dropped.
oci::Manifest image_manifest(const std::vector<oci::Descriptor>& layers, const oci::Descriptor& config);

// What commit_image runs under the store lock it writes the image with: last_check after the
// blobs and before any tag (it may throw: nothing is tagged then), on_tagged after the tags.
struct CommitHooks {
    std::function<void()> last_check;
    // BuildRequest::on_tagged, given the manifest the tags now name.
    std::function<void(const oci::StoreLock&, const oci::Descriptor&)> on_tagged;
};

// Writes the image of s and tags it with each of tags, in one hold of the store's lock (see
// CommitHooks for what else runs in it).
BuildResult commit_image(oci::Store& store, const ImageState& s, const std::vector<std::string>& tags,
                         Rollback& rollback, const CommitHooks& hooks = {});

}  // namespace aishell::composer
