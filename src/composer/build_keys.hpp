// The build's step cache keys (step_cache.hpp chains them): what each kind of step puts in its
// key, so a rebuild hits exactly when the step would make the same thing. Pure functions,
// checked by tests/unit/build_keys_test.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "oci/digest.hpp"

namespace aishell::composer {

// The key of a stage built on an image (by its manifest digest) or on scratch.
oci::Digest image_key(const oci::Digest& manifest);
oci::Digest scratch_key();

// A metadata step (ENV, LABEL, CMD, ...): the parent's key, its history text and the epoch.
// SOURCE_DATE_EPOCH changes what a step makes (clamped mtimes, history dates): an entry made
// without it, or with another value, must not serve the build.
oci::Digest metadata_key(const oci::Digest& parent, const std::string& text, std::optional<std::int64_t> epoch);

// A layer step (RUN, COPY/ADD, WORKDIR): also the store's id mapping (layer trees are owned
// for one mapping) and the step's own parts (its inputs' digests, build args, mounts, ...).
oci::Digest layer_key(const oci::Digest& parent, const std::string& text, const std::string& mapping,
                      std::optional<std::int64_t> epoch, const std::vector<std::string>& parts);

// A RUN's own parts: the ARGs in scope (K=V, as BuildKit keys a RUN by the build args it
// sees), its network mode, then its mounts' parts (build_mounts.hpp: mount_key_parts).
std::vector<std::string> run_key_parts(const std::map<std::string, std::string>& args, const std::string& network,
                                       std::vector<std::string> mount_parts);

// WORKDIR's mkdir: the owner it makes the directory for.
std::vector<std::string> workdir_key_parts(std::optional<std::pair<std::uint32_t, std::uint32_t>> owner);

// A COPY/ADD heredoc: its name and (expanded) content.
std::string heredoc_key_part(const std::string& name, const std::string& content);

}  // namespace aishell::composer
