// Root emulation for single userns mode: the fake-success seccomp filter (see fakeroot.hpp).
#include "runtime/fakeroot.hpp"

#include <seccomp.h>
#include <sys/stat.h>

#include <memory>
#include <string>

#include "common/error.hpp"
#include "runtime/seccomp.hpp"

namespace aishell::runtime {

namespace {

struct CtxDeleter {
    void operator()(void* p) const { seccomp_release(p); }
};
using FilterCtx = std::unique_ptr<void, CtxDeleter>;

constexpr std::uint32_t kFakeSuccess = SCMP_ACT_ERRNO(0);

void add_fake(void* ctx, std::string_view name, unsigned argc = 0, const scmp_arg_cmp* args = nullptr,
              std::uint32_t action = kFakeSuccess) {
    const std::string n(name);
    int nr = seccomp_syscall_resolve_name(n.c_str());
    if (nr == __NR_SCMP_ERROR) return;  // unknown to this libseccomp
    // A name that no architecture of the filter has (chown32 without x86) is not an error.
    int rc = seccomp_rule_add_array(ctx, action, nr, argc, args);
    if (rc != 0 && rc != -EDOM && rc != -EOPNOTSUPP) throw SystemError(-rc, "seccomp rule (root emulation)", n);
}

// mknod(path, mode, dev) and mknodat(dirfd, path, mode, dev): a character or block device
// (S_IFMT bits of mode) is faked; fifos, sockets and regular files are made for real.
void add_fake_device_nodes(void* ctx) {
    for (auto [name, mode_arg] : {std::pair<const char*, unsigned>{"mknod", 1}, {"mknodat", 2}})
        for (std::uint64_t type : {std::uint64_t{S_IFCHR}, std::uint64_t{S_IFBLK}}) {
            scmp_arg_cmp cmp{mode_arg, SCMP_CMP_MASKED_EQ, S_IFMT, type};
            add_fake(ctx, name, 1, &cmp);
        }
}

}  // namespace

const std::vector<std::string_view>& root_emulation_syscalls() {
    static const std::vector<std::string_view> names{
        "chown",     "fchown",     "lchown",     "fchownat",   "chown32",     "fchown32",   "lchown32",
        "setuid",    "setgid",     "setreuid",   "setregid",   "setresuid",   "setresgid",  "setfsuid",
        "setfsgid",  "setgroups",  "setuid32",   "setgid32",   "setreuid32",  "setregid32", "setresuid32",
        "setresgid32", "setfsuid32", "setfsgid32", "setgroups32",
    };
    return names;
}

const std::vector<std::string_view>& identity_syscalls() {
    static const std::vector<std::string_view> names{
        "getuid",   "geteuid",   "getgid",   "getegid",   "getresuid",   "getresgid",   "getgroups",
        "getuid32", "geteuid32", "getgid32", "getegid32", "getresuid32", "getresgid32", "getgroups32",
    };
    return names;
}

bool is_chown_family(std::string_view name) {
    return name.find("chown") != std::string_view::npos;
}

std::vector<sock_filter> compile_root_emulation(ChownEmulation chown, bool emulate_identity) {
    if (emulate_identity && chown != ChownEmulation::Record)
        throw Error("identity emulation needs the chown supervisor (ChownEmulation::Record)");
    FilterCtx ctx(seccomp_init(SCMP_ACT_ALLOW));
    if (!ctx) throw Error("seccomp_init failed (root emulation filter)");
    // The child loads it while privileged; libseccomp must not set no_new_privs.
    seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0);
    // An architecture this filter does not list is the profile's business, not a kill here.
    seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ALLOW);
    add_seccomp_architectures(ctx.get(), default_seccomp_profile());
    for (auto name : root_emulation_syscalls())
        add_fake(ctx.get(), name, 0, nullptr,
                 chown == ChownEmulation::Record && is_chown_family(name) ? SCMP_ACT_NOTIFY : kFakeSuccess);
    add_fake_device_nodes(ctx.get());
    if (emulate_identity)
        for (auto name : identity_syscalls()) add_fake(ctx.get(), name, 0, nullptr, SCMP_ACT_NOTIFY);
    return export_seccomp_bpf(ctx.get());
}

}  // namespace aishell::runtime
