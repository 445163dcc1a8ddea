// aishell check's host findings (runtime/host_check.hpp): each sysctl that turns unprivileged
// user namespaces off gives its own problem and exact fix, and newuidmap is found through
// $PATH as podman finds it. The probes themselves run against the real kernel in
// tests/integration/test_check.py.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "common/file.hpp"
#include "runtime/host_check.hpp"
#include "scoped_env.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using aishell::runtime::HostFacts;
using aishell::runtime::NamespaceProbe;
using aishell::runtime::userns_problem;

namespace {

NamespaceProbe failed(const char* step, int error) {
    NamespaceProbe p;
    p.failed_step = step;
    p.error = error;
    return p;
}

}  // namespace

TEST_CASE("check: each sysctl that blocks user namespaces gets its own fix", "[check]") {
    HostFacts host;
    SECTION("user.max_user_namespaces=0") {
        host.max_user_namespaces = 0;
        auto p = userns_problem(failed("unshare(CLONE_NEWUSER|CLONE_NEWNS)", ENOSPC), host);
        CHECK(p.what == "user namespaces are disabled: user.max_user_namespaces=0 (unshare(CLONE_NEWUSER|CLONE_NEWNS): "
                        "No space left on device)");
        CHECK(p.fix.starts_with("sudo sysctl -w user.max_user_namespaces=15000 (and the same setting in /etc/sysctl.d/"));
    }
    SECTION("Debian's kernel.unprivileged_userns_clone=0") {
        host.max_user_namespaces = 63000;
        host.unprivileged_userns_clone = 0;
        auto p = userns_problem(failed("unshare(CLONE_NEWUSER|CLONE_NEWNS)", EPERM), host);
        CHECK(p.what.starts_with("unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone=0"));
        CHECK(p.fix.starts_with("sudo sysctl -w kernel.unprivileged_userns_clone=1"));
    }
    SECTION("Ubuntu's kernel.apparmor_restrict_unprivileged_userns=1") {
        host.max_user_namespaces = 63000;
        host.apparmor_restrict_userns = 1;
        auto p = userns_problem(failed("write /proc/self/uid_map", EPERM), host);
        CHECK(p.what == "AppArmor restricts unprivileged user namespaces: kernel.apparmor_restrict_unprivileged_userns=1 "
                        "(write /proc/self/uid_map: Operation not permitted)");
        CHECK(p.fix.starts_with("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"));
        CHECK(p.fix.find("AppArmor profile that allows `userns,`") != std::string::npos);
    }
    SECTION("no sysctl says why") {
        host.max_user_namespaces = 63000;
        host.apparmor_restrict_userns = 0;
        auto p = userns_problem(failed("unshare(CLONE_NEWUSER|CLONE_NEWNS)", EINVAL), host);
        CHECK(p.what == "user namespaces do not work for this user (unshare(CLONE_NEWUSER|CLONE_NEWNS): Invalid argument)");
        CHECK(p.fix.find("CONFIG_USER_NS") != std::string::npos);
    }
}

TEST_CASE("check: programs are found through PATH, in its order, executable ones only", "[check]") {
    TempDir dir;
    for (const char* d : {"a", "b", "c"}) fs::create_directories(dir.path / d);
    aishell::write_file_atomic(dir.path / "a" / "tool", "not executable", 0644);
    aishell::write_file_atomic(dir.path / "b" / "tool", "#!/bin/sh\n", 0755);
    aishell::write_file_atomic(dir.path / "c" / "tool", "#!/bin/sh\n", 0755);
    ScopedEnv path("PATH", (dir.path / "a").string() + "::" + (dir.path / "b").string() + ":" + (dir.path / "c").string());
    CHECK(aishell::runtime::find_in_path("tool") == dir.path / "b" / "tool");
    CHECK(aishell::runtime::find_in_path("missing").empty());
}
