// Seccomp profiles: JSON parsing, the built-in default, compilation (see seccomp.hpp).
#include "runtime/seccomp.hpp"

#include <linux/audit.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stddef.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/json_parse.hpp"
#include "common/stable_hash.hpp"
#include "common/unique_fd.hpp"
#include "runtime/capabilities.hpp"

namespace aishell::runtime {

namespace {

#include "runtime/seccomp_default.inc"

using json = nlohmann::json;

struct CtxDeleter {
    void operator()(void* p) const { seccomp_release(p); }
};
using FilterCtx = std::unique_ptr<void, CtxDeleter>;

std::vector<std::string> string_list(const json& j, const char* key) {
    std::vector<std::string> out;
    if (!j.contains(key) || j[key].is_null()) return out;
    for (const auto& v : j.at(key)) out.push_back(v.get<std::string>());
    return out;
}

SeccompFilter parse_filter(const json& j) {
    SeccompFilter f;
    if (j.is_null()) return f;
    f.caps = string_list(j, "caps");
    f.arches = string_list(j, "arches");
    if (j.contains("minKernel") && !j["minKernel"].is_null()) f.min_kernel = j["minKernel"].get<std::string>();
    return f;
}

SeccompRule parse_rule(const json& j) {
    SeccompRule r;
    r.names = string_list(j, "names");
    if (j.contains("name") && j["name"].is_string()) r.names.push_back(j["name"].get<std::string>());
    r.action = j.at("action").get<std::string>();
    if (j.contains("errnoRet") && !j["errnoRet"].is_null()) r.errno_ret = j["errnoRet"].get<int>();
    if (j.contains("args") && !j["args"].is_null())
        for (const auto& a : j["args"])
            r.args.push_back({a.at("index").get<unsigned>(), a.at("value").get<std::uint64_t>(),
                              a.value("valueTwo", std::uint64_t{0}), a.at("op").get<std::string>()});
    if (j.contains("includes")) r.includes = parse_filter(j["includes"]);
    if (j.contains("excludes")) r.excludes = parse_filter(j["excludes"]);
    return r;
}

// "5.15.0-1-amd64" >= "4.8"?
bool kernel_at_least(const std::string& release, const std::string& min) {
    int a = 0, b = 0, x = 0, y = 0;
    std::sscanf(release.c_str(), "%d.%d", &a, &b);
    std::sscanf(min.c_str(), "%d.%d", &x, &y);
    return a != x ? a > x : b >= y;
}

bool has_any_cap(const std::vector<std::string>& caps, std::uint64_t set) {
    for (const auto& c : caps)
        if (set & (1ull << capability_from_name(c))) return true;
    return false;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

std::uint32_t action_value(const std::string& action, std::optional<int> errno_ret) {
    if (action == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
    if (action == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(static_cast<std::uint16_t>(errno_ret.value_or(EPERM)));
    if (action == "SCMP_ACT_KILL" || action == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
    if (action == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
    if (action == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
    if (action == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
    if (action == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(static_cast<std::uint16_t>(errno_ret.value_or(EPERM)));
    throw Error("unknown seccomp action '" + action + "'");
}

scmp_compare compare_op(const std::string& op) {
    if (op == "SCMP_CMP_NE") return SCMP_CMP_NE;
    if (op == "SCMP_CMP_LT") return SCMP_CMP_LT;
    if (op == "SCMP_CMP_LE") return SCMP_CMP_LE;
    if (op == "SCMP_CMP_EQ") return SCMP_CMP_EQ;
    if (op == "SCMP_CMP_GE") return SCMP_CMP_GE;
    if (op == "SCMP_CMP_GT") return SCMP_CMP_GT;
    if (op == "SCMP_CMP_MASKED_EQ") return SCMP_CMP_MASKED_EQ;
    throw Error("unknown seccomp comparison '" + op + "'");
}

std::uint32_t arch_token(const std::string& name) {
    std::string n = name;
    if (n.rfind("SCMP_ARCH_", 0) == 0) n = n.substr(10);
    std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return seccomp_arch_resolve_name(n.c_str());
}

void add_rule(void* ctx, const SeccompRule& rule, const std::string& name, std::uint32_t action, std::uint32_t def) {
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr == __NR_SCMP_ERROR) return;  // unknown to this libseccomp: nothing to allow
    if (action == def) return;          // libseccomp refuses rules that repeat the default
    std::vector<scmp_arg_cmp> cmps;
    for (const auto& a : rule.args) cmps.push_back({a.index, compare_op(a.op), a.value, a.value_two});
    // Several conditions on one argument mean "any of them" in Docker's format (moby
    // seccomp_linux.go), not "all": one rule each.
    bool same_index = cmps.size() > 1 && std::all_of(cmps.begin(), cmps.end(), [&](auto& c) { return c.arg == cmps[0].arg; });
    auto add = [&](unsigned n, const scmp_arg_cmp* c) {
        int rc = seccomp_rule_add_array(ctx, action, nr, n, c);
        if (rc != 0) throw SystemError(-rc, "seccomp rule", name);
    };
    if (same_index)
        for (const auto& c : cmps) add(1, &c);
    else
        add(static_cast<unsigned>(cmps.size()), cmps.data());
}

// The highest native syscall number the profile names at all (in any rule).
int max_profile_syscall(const SeccompProfile& p) {
    int max = -1;
    for (const auto& r : p.syscalls)
        for (const auto& n : r.names) max = std::max(max, seccomp_syscall_resolve_name(n.c_str()));
    return max;
}

// Prepends: on the native arch, a syscall number above max returns ENOSYS (runc's patchbpf
// idea); x32 numbers (bit 30) go on to libseccomp's program.
std::vector<sock_filter> prepend_enosys(std::vector<sock_filter> prog, std::uint32_t native, int max) {
    const std::uint32_t x32_bit = native == AUDIT_ARCH_X86_64 ? 0x40000000u : 0xffffffffu;
    std::vector<sock_filter> head = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, native, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, x32_bit, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, static_cast<std::uint32_t>(max), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    };
    head.insert(head.end(), prog.begin(), prog.end());
    return head;
}

}  // namespace

void add_seccomp_architectures(void* ctx, const SeccompProfile& p) {
    const std::uint32_t native = seccomp_arch_native();
    auto add = [&](const std::string& name) {
        std::uint32_t tok = arch_token(name);
        if (tok == 0 || tok == native) return;  // unknown to libseccomp, or already there
        int rc = seccomp_arch_add(ctx, tok);
        if (rc != 0 && rc != -EEXIST) throw SystemError(-rc, "seccomp_arch_add", name);
    };
    for (const auto& m : p.arch_map) {
        if (arch_token(m.arch) != native) continue;
        for (const auto& s : m.sub_arches) add(s);
    }
    for (const auto& a : p.architectures) add(a);
}

std::vector<sock_filter> export_seccomp_bpf(void* ctx) {
    UniqueFd fd(::memfd_create("aishell-seccomp", MFD_CLOEXEC));
    if (!fd) throw_errno("memfd_create");
    if (int rc = seccomp_export_bpf(ctx, fd.get()); rc != 0) throw SystemError(-rc, "seccomp_export_bpf");
    off_t size = ::lseek(fd.get(), 0, SEEK_END);
    if (size <= 0 || size % sizeof(sock_filter) != 0) throw Error("seccomp_export_bpf: bad program size");
    std::vector<sock_filter> prog(static_cast<std::size_t>(size) / sizeof(sock_filter));
    if (::pread(fd.get(), prog.data(), static_cast<std::size_t>(size), 0) != size) throw_errno("read seccomp program");
    return prog;
}

SeccompProfile parse_seccomp_profile(std::string_view text) {
    json j = oci::parse_json_or_throw(text, "seccomp profile");
    try {
        SeccompProfile p;
        p.default_action = j.at("defaultAction").get<std::string>();
        if (j.contains("defaultErrnoRet") && !j["defaultErrnoRet"].is_null()) p.default_errno = j["defaultErrnoRet"].get<int>();
        if (j.contains("archMap") && !j["archMap"].is_null())
            for (const auto& m : j["archMap"]) p.arch_map.push_back({m.at("architecture").get<std::string>(), string_list(m, "subArchitectures")});
        p.architectures = string_list(j, "architectures");
        if (j.contains("syscalls") && !j["syscalls"].is_null())
            for (const auto& r : j["syscalls"]) p.syscalls.push_back(parse_rule(r));
        action_value(p.default_action, p.default_errno);  // validates
        return p;
    } catch (const json::exception& e) {
        throw Error(std::string("seccomp profile: ") + e.what());
    }
}

std::string default_seccomp_profile_text() {
    std::string text;
    for (const char* chunk : kDefaultSeccompProfileChunks) text += chunk;
    return text;
}

const SeccompProfile& default_seccomp_profile() {
    static const SeccompProfile profile = parse_seccomp_profile(default_seccomp_profile_text());
    return profile;
}

SeccompContext host_seccomp_context(std::uint64_t capabilities) {
    SeccompContext c;
    c.capabilities = capabilities;
    utsname u{};
    if (::uname(&u) == 0) c.kernel_release = u.release;
    switch (seccomp_arch_native()) {
        case SCMP_ARCH_X86_64: c.go_arch = "amd64"; break;
        case SCMP_ARCH_AARCH64: c.go_arch = "arm64"; break;
        case SCMP_ARCH_X86: c.go_arch = "386"; break;
        case SCMP_ARCH_ARM: c.go_arch = "arm"; break;
        case SCMP_ARCH_PPC64LE: c.go_arch = "ppc64le"; break;
        case SCMP_ARCH_S390X: c.go_arch = "s390x"; break;
        case SCMP_ARCH_RISCV64: c.go_arch = "riscv64"; break;
        default: c.go_arch = "unknown";
    }
    return c;
}

bool rule_applies(const SeccompRule& r, const SeccompContext& c) {
    if (!r.excludes.arches.empty() && contains(r.excludes.arches, c.go_arch)) return false;
    if (!r.excludes.caps.empty() && has_any_cap(r.excludes.caps, c.capabilities)) return false;
    if (!r.excludes.min_kernel.empty() && kernel_at_least(c.kernel_release, r.excludes.min_kernel)) return false;
    if (!r.includes.arches.empty() && !contains(r.includes.arches, c.go_arch)) return false;
    if (!r.includes.caps.empty() && !has_any_cap(r.includes.caps, c.capabilities)) return false;
    if (!r.includes.min_kernel.empty() && !kernel_at_least(c.kernel_release, r.includes.min_kernel)) return false;
    return true;
}

std::vector<sock_filter> compile_seccomp(const SeccompProfile& p, const SeccompContext& c) {
    const std::uint32_t def = action_value(p.default_action, p.default_errno);
    FilterCtx ctx(seccomp_init(def));
    if (!ctx) throw Error("seccomp_init failed");
    // The child loads the program itself; libseccomp must not set no_new_privs.
    seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0);
    // The binary tree loads in a third of the time of the linear chain. libseccomp before 2.5.4
    // generated a filter that ignores its default action when the tree has no rule
    // (seccomp/libseccomp#370), so older versions keep the chain.
    if (const scmp_version* v = seccomp_version();
        v && (v->major > 2 || (v->major == 2 && (v->minor > 5 || (v->minor == 5 && v->micro >= 4)))))
        seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2);
    add_seccomp_architectures(ctx.get(), p);
    for (const auto& r : p.syscalls) {
        if (!rule_applies(r, c)) continue;
        std::uint32_t action = action_value(r.action, r.errno_ret);
        for (const auto& name : r.names) with_context("seccomp profile", [&] { add_rule(ctx.get(), r, name, action, def); });
    }
    auto prog = export_seccomp_bpf(ctx.get());
    if (def == SCMP_ACT_ALLOW) return prog;
    return prepend_enosys(std::move(prog), seccomp_arch_native(), max_profile_syscall(p));
}

namespace {

constexpr const char* kCacheEntrySuffix = ".bpf";
constexpr std::string_view kCacheMagic = "aishell-seccomp-bpf 2 ";

// Entries are named, and their programs checked for truncation and bit rot, with
// stable_hash_hex (FNV-1a): no cryptographic hash is needed, since an entry carries its whole key
// text, which a hit compares byte for byte, and the cache is trusted exactly as far as the store
// is (see read_trusted_entry); SHA-256 would load and initialise libcrypto on every exec.
std::string_view program_bytes(const std::vector<sock_filter>& prog) {
    return {reinterpret_cast<const char*>(prog.data()), prog.size() * sizeof(sock_filter)};
}

// The GNU build-id note of the running executable (hex), "" when it has none. The compiled
// program depends on this code (prepend_enosys, the rule translation), not only on the profile
// text: a rebuilt aishell must never load what an older one compiled.
std::string read_build_id() {
    std::string id;
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* data) -> int {
            auto* out = static_cast<std::string*>(data);
            for (int i = 0; i < info->dlpi_phnum && out->empty(); ++i) {
                const ElfW(Phdr)& ph = info->dlpi_phdr[i];
                if (ph.p_type != PT_NOTE) continue;
                const std::size_t align = ph.p_align == 8 ? 8 : 4;
                auto pad = [align](std::size_t n) { return (n + align - 1) & ~(align - 1); };
                const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
                const char* end = p + ph.p_memsz;
                while (static_cast<std::size_t>(end - p) >= sizeof(ElfW(Nhdr))) {
                    const auto* n = reinterpret_cast<const ElfW(Nhdr)*>(p);
                    const char* name = p + sizeof *n;
                    const char* desc = name + pad(n->n_namesz);
                    if (desc + n->n_descsz > end) break;
                    if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
                        static const char hex[] = "0123456789abcdef";
                        for (std::size_t k = 0; k < n->n_descsz; ++k) {
                            auto b = static_cast<unsigned char>(desc[k]);
                            *out += hex[b >> 4];
                            *out += hex[b & 15];
                        }
                        break;
                    }
                    p = desc + pad(n->n_descsz);
                }
            }
            return 1;  // the first object is the executable itself: stop there
        },
        &id);
    return id;
}

// Trust in a cache entry.
//
// An entry is checked against its own checksum only, which catches truncation and bit rot, not
// tampering: a keyed MAC would need a secret that whoever can write the store cannot read, and
// every place aishell could keep one (the store, $HOME, the keyring of the same uid) is open to
// the same writers. So the cache is trusted exactly as far as the store is, the same model as
// the layer trees, index.json and meta.json: the store belongs to the user and only the user
// (and root) may write it. What that model does not cover, and what we check on every load:
// another local user able to plant or rewrite entries (a shared or group-writable store). An
// entry or the cache dir not owned by our euid, or writable by group or others, is ignored (and
// recompiled, replaced when we may). What it cannot cover: a container that can write the store
// (the user bound it, or a dir above it, into the container) could weaken the filters of later
// runs; such a container can also rewrite the layer trees later runs execute and, as the store
// lives under $HOME by default, usually the user's dotfiles: never bind the store into a
// container writable (runtime README).
bool owned_privately(const struct stat& st) {
    return st.st_uid == ::geteuid() && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

std::optional<std::string> read_trusted_entry(const fs::path& dir, const fs::path& entry) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || !owned_privately(st)) return std::nullopt;
    UniqueFd fd(::open(entry.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || !owned_privately(st)) return std::nullopt;
    if (st.st_size <= 0 || st.st_size > (1 << 20)) return std::nullopt;
    std::string data(static_cast<std::size_t>(st.st_size), '\0');
    if (::pread(fd.get(), data.data(), data.size(), 0) != st.st_size) return std::nullopt;
    return data;
}

// Entries of older aishell builds (another build-id in the key) are never read again: on a miss,
// those untouched for a month go.
void prune_stale_entries(const fs::path& dir) {
    const auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(24 * 30);
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code e2;
        if (it->path().extension() == kCacheEntrySuffix && it->is_regular_file(e2) && it->last_write_time(e2) < cutoff && !e2)
            fs::remove(it->path(), e2);
    }
}

}  // namespace

std::string executable_build_id() {
    static const std::string id = read_build_id();  // the mapped executable cannot change
    return id;
}

std::string seccomp_cache_key(std::string_view profile_json, const SeccompContext& ctx) {
    const scmp_version* v = seccomp_version();
    char head[256];
    std::snprintf(head, sizeof head, "aishell seccomp cache 2\nlibseccomp %u.%u.%u\nnative %u\ncaps %llx\n",
                  v ? v->major : 0, v ? v->minor : 0, v ? v->micro : 0, seccomp_arch_native(),
                  static_cast<unsigned long long>(ctx.capabilities));
    std::string key = head;
    key += "aishell build " + executable_build_id() + "\n";
    key += "kernel " + ctx.kernel_release + "\narch " + ctx.go_arch + "\nprofile\n";
    key += profile_json;
    return key;
}

std::string encode_seccomp_cache_entry(const std::string& key, const std::vector<sock_filter>& prog) {
    std::string out(kCacheMagic);
    out += std::to_string(key.size()) + " " + std::to_string(prog.size()) + " " + stable_hash_hex(program_bytes(prog)) + "\n";
    out += key;
    out += program_bytes(prog);
    return out;
}

namespace {

// A decimal field of at most max_digits digits, nullopt otherwise.
std::optional<std::size_t> decimal_field(std::string_view text, std::size_t max_digits) {
    if (text.empty() || text.size() > max_digits ||
        !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    return std::stoul(std::string(text));
}

}  // namespace

std::optional<std::vector<sock_filter>> decode_seccomp_cache_entry(std::string_view data, const std::string& key) {
    if (data.substr(0, kCacheMagic.size()) != kCacheMagic) return std::nullopt;
    auto nl = data.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    std::string_view head = data.substr(kCacheMagic.size(), nl - kCacheMagic.size()), rest = data.substr(nl + 1);
    // "<key length> <count> <checksum>"
    auto sp1 = head.find(' '), sp2 = head.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1) return std::nullopt;
    auto key_size = decimal_field(head.substr(0, sp1), 7);
    auto count = decimal_field(head.substr(sp1 + 1, sp2 - sp1 - 1), 5);
    if (!key_size || *key_size != key.size() || rest.substr(0, key.size()) != key) return std::nullopt;
    std::string_view body = rest.substr(key.size());
    // A classic BPF program has at most BPF_MAXINSNS (4096) instructions; seccomp(2) says the same.
    if (!count || *count == 0 || *count > BPF_MAXINSNS || body.size() != *count * sizeof(sock_filter)) return std::nullopt;
    if (stable_hash_hex(body) != head.substr(sp2 + 1)) return std::nullopt;
    std::vector<sock_filter> prog(*count);
    std::memcpy(prog.data(), body.data(), body.size());
    return prog;
}

fs::path seccomp_cache_entry(const fs::path& cache_dir, std::string_view profile_json, const SeccompContext& ctx) {
    return cache_dir / (stable_hash_hex(seccomp_cache_key(profile_json, ctx)) + kCacheEntrySuffix);
}

std::vector<sock_filter> compile_seccomp_cached(const fs::path& cache_dir, std::string_view profile_json,
                                                const SeccompContext& ctx) {
    // Without a build-id the key cannot tell this aishell's compiler from another's: no cache.
    if (executable_build_id().empty()) return compile_seccomp(parse_seccomp_profile(profile_json), ctx);
    const std::string key = seccomp_cache_key(profile_json, ctx);
    const fs::path entry = cache_dir / (stable_hash_hex(key) + kCacheEntrySuffix);
    if (auto data = read_trusted_entry(cache_dir, entry))
        if (auto prog = decode_seccomp_cache_entry(*data, key)) return *prog;
    auto prog = compile_seccomp(parse_seccomp_profile(profile_json), ctx);
    try {
        make_dirs(cache_dir, 0700);
        prune_stale_entries(cache_dir);
        write_file_atomic(entry, encode_seccomp_cache_entry(key, prog), 0600);
    } catch (const Error&) {
        // A read-only or full store: the run goes on with the program compiled now.
    }
    return prog;
}

}  // namespace aishell::runtime
