// Test support: a test case that cannot run here (not root, a filesystem without a feature)
// ends as a visible skip, not a pass and not a failure. Catch2 v2 (Debian's) has no SKIP, so:
// under ctest, which runs each test case in its own process with AISHELL_UNIT_SKIP_STATUS set
// and counts that exit status as skipped (SKIP_RETURN_CODE, tests/unit/CMakeLists.txt), the
// process exits with it; run directly (`unit_tests '[tag]'`), the case fails with the reason,
// since a direct run must not report as passed what it did not check.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <catch2/catch.hpp>

namespace aishell::test {

[[noreturn]] inline void skip_test(const std::string& reason) {
    if (const char* status = std::getenv("AISHELL_UNIT_SKIP_STATUS")) {
        std::fprintf(stderr, "SKIPPED: %s\n", reason.c_str());
        std::fflush(nullptr);
        std::_Exit(std::atoi(status));
    }
    FAIL("cannot run here: " << reason << " (ctest reports this as a skip)");
    std::abort();  // FAIL throws
}

// For the cases tagged [root] (ctest label `root`, which scripts/test runs as root).
inline void require_root() {
    if (::geteuid() != 0) skip_test("needs root (ctest -L root, as root)");
}

}  // namespace aishell::test
