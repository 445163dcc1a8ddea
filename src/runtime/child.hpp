// The code that runs in the cloned child (the container's PID 1) and in the command it forks.
// Everything here is C-like: no allocation, no exceptions, only async-signal-safe system
// calls; the parent prepared every string and buffer in ChildContext. A failure is written to
// the report pipe as one ChildReport and the process _exits.
#pragma once

#include <linux/capability.h>
#include <linux/filter.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/container.hpp"
#include "runtime/terminal.hpp"

namespace aishell::runtime {

// The message that carries a descriptor from the command to aishell (the seccomp listener over
// owner_sock, the pty master over console_sock): one byte and room for one descriptor
// (SCM_RIGHTS). Only struct set-up (no allocation, no call), so the command's side may use it
// between clone and exec.
struct FdMessage {
    char byte = 'F';
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    FdMessage() noexcept {
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
    }
    FdMessage(const FdMessage&) = delete;  // points into itself
    FdMessage& operator=(const FdMessage&) = delete;
};

enum class ChildStep : std::int32_t {
    Sync = 1, SetIds, Hostname, MakePrivate, Overlay, OpenRoot, Mount, Loopback, Pivot, Passwd, Home,
    Chdir, Fork, Terminal, Stdio, CapBounding, NoNewPrivs, Seccomp, Groups, SetGid, SetUid, Capabilities,
    Exec, AptConfig, FakeRoot, CommandLine,
};

const char* step_name(ChildStep step) noexcept;

struct ChildReport {
    std::int32_t step = 0;
    std::int32_t err = 0;
    char path[256] = {};
};

struct ChildContext {
    const ContainerSpec* spec = nullptr;
    int sync_fd = -1;       // read end: one byte once the id maps are written
    int report_fd = -1;     // write end, O_CLOEXEC: closes on a successful exec
    int status_fd = -1;     // early_status: PID 1 writes the command's exit status here (int)
    int console_sock = -1;  // -t: the command sends the master of the pty it opens here (SCM_RIGHTS)
    TerminalSettings terminal;  // -t: the pty starts with these (the user's terminal's)
    int stdin_null = -1;    // without -i: /dev/null as stdin
    std::string rootfs;     // <run> itself: the overlay is mounted over it
    std::string layers_dir;
    std::vector<std::string> lower_abs;  // for fsconfig lowerdir+ (top first)
    std::string upper_abs, work_abs;
    std::string overlay_data;            // fallback mount(2) options, paths relative to layers_dir
    std::vector<const char*> argv, envp; // null-terminated
    std::vector<const char*> envp_apt;   // envp + APT_CONFIG (emulation; empty: never)
    sock_fprog seccomp{};                // len 0: none
    sock_fprog fakeroot{};               // root emulation filter; len 0: none
    int owner_sock = -1;                 // its chown calls notify: the listener fd goes here (SCM_RIGHTS)
    unsigned last_cap = 40;              // /proc/sys/kernel/cap_last_cap
    __user_cap_data_struct caps[2]{};    // effective = permitted; inheritable empty
    bool setgroups_allowed = true;
    bool root_mapped = true;             // container uid 0 exists (not keep-id single)
};

// The child after clone: never returns.
[[noreturn]] void child_main(const ChildContext& ctx) noexcept;

}  // namespace aishell::runtime
