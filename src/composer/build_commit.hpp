// Committing a build's result: the final stage's config (build_config.hpp: final_config) and
// an OCI manifest of its layers are written as blobs, and each -t name tagged, recorded in the
// rollback so a build that fails after it leaves the tags as they were.
#pragma once

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

// Writes the image of s and tags it with each of tags, under the store's lock.
BuildResult commit_image(oci::Store& store, const ImageState& s, const std::vector<std::string>& tags,
                         Rollback& rollback);

}  // namespace aishell::composer
