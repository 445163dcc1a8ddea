// How an image of the store is named in an image archive (oci/archive_format.hpp): Docker's
// familiar form for RepoTags, the normalized reference for io.containerd.image.name, the tag
// for org.opencontainers.image.ref.name.
#pragma once

#include <string>
#include <string_view>

#include "oci/archive_format.hpp"
#include "registry/reference.hpp"

namespace aishell::registry {

// Docker's familiar form of ref.name() (distribution's reference.FamiliarName): Docker Hub's
// domain dropped, and "library/" too when one component remains: "debian", "team/app",
// "127.0.0.1:5000/busybox".
std::string familiar_name(const Reference& ref);

// How an image named store_name (its name in the store: "aishell:base", "b10",
// "docker.io/library/debian:latest") is named in an image archive:
// {"aishell:base", "docker.io/library/aishell:base", "base"}; "b10" gets ":latest"; a name
// that is only a digest gets no RepoTag and no ref.name. Throws Error for a name that is not a
// reference.
oci::image_archive::ArchiveName archive_name(std::string_view store_name);

}  // namespace aishell::registry
