// Reading the whole build step cache (step_cache.hpp), for `aishell volumes prune`, which removes
// the entries whose layer no image has any more (composer/prune.hpp). Defined in step_cache.cpp.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "composer/step_cache.hpp"

namespace aishell::composer {

// Every entry file in the cache (cache/<key hex>.json) with what it says; nullopt for one that
// does not parse (a partial write after a crash: get() treats it as a miss).
std::vector<std::pair<std::string, std::optional<CacheEntry>>> step_cache_entries(const oci::Store& store);

}  // namespace aishell::composer
