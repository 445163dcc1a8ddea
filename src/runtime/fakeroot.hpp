// Root emulation for single userns mode (only the caller mapped, to container root; setgroups
// denied): the seccomp filter that makes the set*id calls and device mknod succeed without doing
// anything and hands the chown family to a supervisor (or fakes it too), and the apt
// configuration that keeps apt from dropping to _apt. As Charliecloud's `ch-image
// --force=seccomp`; used for build RUN steps.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <string_view>
#include <vector>

namespace aishell::runtime {

// Syscalls that return 0 without effect under emulation, by libseccomp name. The 32-bit x86
// variants (chown32, setuid32, ...) apply to i386 processes on x86-64; names a libseccomp or an
// architecture does not know are skipped. capset is not among them: the container's capability
// set is real inside its user namespace and the runtime's own capset must still drop it.
const std::vector<std::string_view>& root_emulation_syscalls();

// The filter: ALLOW by default (it is stacked with the container's profile, which decides
// everything else), ERRNO(0) for root_emulation_syscalls() and for mknod/mknodat of character
// and block devices (the node is not made), on the native architecture and the sub-architectures
// the default profile runs (x86 and x32 on x86-64). Unknown architectures are allowed here and
// left to the profile.
//
// With chown = Record (what run_container uses), the chown family returns SECCOMP_RET_USER_NOTIF
// instead: the filter is loaded with SECCOMP_FILTER_FLAG_NEW_LISTENER and a supervisor in aishell
// (chown_supervisor.hpp) answers each call, recording the owner it asked for. FakeSuccess is the
// plain Charliecloud behaviour, for a process that has no supervisor.
//
// Stacking (seccomp(2), kernel/seccomp.c seccomp_run_filters): every filter runs and the action
// of highest precedence wins (KILL > TRAP > ERRNO > USER_NOTIF > TRACE > LOG > ALLOW); between
// two ERRNO verdicts the most recently installed filter wins. So this filter is installed BEFORE
// the profile: where the profile allows a call, ERRNO(0) wins and the caller sees 0 (the kernel
// returns -errno, here -0); where the profile denies it (ERRNO(EPERM), KILL), the profile wins.
//
// With emulate_identity (a RUN under a non-root USER in single mode, which runs as the one
// mapped id, container root), the get*id family (getuid, geteuid, getgid, getegid, getresuid,
// getresgid, getgroups and their 32-bit variants) returns SECCOMP_RET_USER_NOTIF too: the
// supervisor answers with USER's ids (EmulatedIdentity), so the step's processes see
// themselves as USER. Needs ChownEmulation::Record (the supervisor).
enum class ChownEmulation { FakeSuccess, Record };
std::vector<sock_filter> compile_root_emulation(ChownEmulation chown = ChownEmulation::FakeSuccess,
                                                bool emulate_identity = false);

// The identity the get*id family reports under emulate_identity.
struct EmulatedIdentity {
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::vector<std::uint32_t> groups;  // supplementary groups, as getgroups reports them
};

// The get*id family, by libseccomp name (x86's 16-bit calls and their 32-bit variants included).
const std::vector<std::string_view>& identity_syscalls();

// The chown-family subset of root_emulation_syscalls().
bool is_chown_family(std::string_view syscall_name);

// apt: APT_CONFIG names a file (read before /etc/apt/apt.conf.d) saying APT::Sandbox::User
// "root", so the download methods do not setresuid to _apt and then check that getuid()
// changed (they would fail, the ids being emulated). The file is written by the container's
// PID 1 into the container's own /dev tmpfs, never into the rootfs, so it cannot land in a
// layer; only when the image has apt-get and the command's environment has no APT_CONFIG.
inline constexpr char kAptConfigEnv[] = "APT_CONFIG=/dev/.aishell-apt.conf";
inline constexpr const char* kAptConfigPath = kAptConfigEnv + sizeof "APT_CONFIG=" - 1;
inline constexpr std::string_view kAptConfigText =
    "// Written by aishell for this build step (single userns mode: ids are emulated).\n"
    "APT::Sandbox::User \"root\";\n";
inline constexpr const char* kAptBinary = "/usr/bin/apt-get";

}  // namespace aishell::runtime
