// The bodies of the composer's hidden helpers (helpers.hpp): their arguments checked, then the
// functions that do the work.
#include "composer/helpers.hpp"

#include "common/error.hpp"
#include "common/parse_number.hpp"
#include "composer/build_step.hpp"

namespace aishell::composer {

namespace {

void expect_args(const HelperEntry& helper, const std::vector<std::string>& args, const char* usage) {
    if (args.size() != 1) throw Error(std::string(helper.name) + ": expected " + usage, kHelperHint);
}

}  // namespace

int serve_build_steps_main(const std::vector<std::string>& args) {
    expect_args(kBuildStepServer, args, "FD");
    const int fd = parse_number<int>(args[0], {.what = "FD", .where = kBuildStepServer.name});
    if (fd < 0) throw Error(std::string(kBuildStepServer.name) + ": FD " + args[0] + " is negative");
    return serve_build_steps(fd);
}

int prepare_run_mounts_main(const std::vector<std::string>& args) {
    expect_args(kPrepareRunMounts, args, "SPEC");
    return run_build_step_here(args[0]);
}

}  // namespace aishell::composer
