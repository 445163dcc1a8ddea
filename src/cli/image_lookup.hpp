// Finding an image in the store by the name a user typed: the name as written first
// (`aishell:base`, `b10`), then its normalized reference (`docker.io/library/debian:latest`).
#pragma once

#include <optional>
#include <string>

#include "oci/store.hpp"

namespace aishell::cli {

std::optional<oci::ImageEntry> find_local_image(const oci::Store& store, const std::string& name);
// Same, but a miss is an error naming the image, with a hint to pull it.
oci::ImageEntry require_local_image(const oci::Store& store, const std::string& name);

}  // namespace aishell::cli
