// Planning a build's stages: which stages the target needs (its FROM, COPY --from and RUN
// --mount from= chains, transitively), how a name or index names an earlier stage, and the
// state a stage starts from when its FROM or a --from names an image in the store.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "composer/build_config.hpp"
#include "composer/instructions.hpp"
#include "oci/lease.hpp"
#include "oci/store.hpp"

namespace aishell::composer {

// The stage that name (a stage name, case-insensitive, or an index) names among those before
// index `before`; nullopt when it names none (then it is an image).
std::optional<int> stage_by_name(const Dockerfile& df, const std::string& name, int before);

// FROM scratch (any case).
bool is_scratch(const std::string& base);

// The stages the target needs, itself included (global_scope: global_arg_scope's, for FROM).
std::set<int> needed_stages(const Dockerfile& df, int target, const std::map<std::string, std::string>& global_scope);

// Pulls an image reference that is not in the store; returns its index.json name.
using PullFunction = std::function<std::string(oci::Store&, const std::string&)>;

// An image of the store (pulled first when pull is set and it is missing) as a stage's start:
// its config, layers and key; its blobs leased for the build.
ImageState image_state(oci::Store& store, oci::Lease& lease, const std::string& ref, const PullFunction& pull);

}  // namespace aishell::composer
