// The composer's hidden helpers (common/helper_entry.hpp): what the build engine re-executes
// aishell for inside the user namespace. cli dispatches them from kHelpers; the spawners
// (build_step.cpp, build_mounts.cpp) pass the entry itself to runtime::spawn_in_userns /
// run_in_userns.
#pragma once

#include <string>
#include <vector>

#include "common/helper_entry.hpp"

namespace aishell::composer {

// `__build-step-server FD`: serve_build_steps(FD) (build_step.hpp).
int serve_build_steps_main(const std::vector<std::string>& args);
// `__prepare-run-mounts SPEC`: run_build_step_here(SPEC) (build_step.hpp, build_mounts.hpp).
int prepare_run_mounts_main(const std::vector<std::string>& args);

// The build's one step helper: runs every step's file work and commit, fed over a socketpair.
inline constexpr HelperEntry kBuildStepServer{"__build-step-server", serve_build_steps_main};
// RUN --mount's prepare ops (owners and copies of the mount sources), one spec file per run.
inline constexpr HelperEntry kPrepareRunMounts{"__prepare-run-mounts", prepare_run_mounts_main};

inline constexpr HelperEntry kHelpers[] = {kBuildStepServer, kPrepareRunMounts};

}  // namespace aishell::composer
