// Capability sets (see capabilities.hpp).
#include "runtime/capabilities.hpp"

#include <sys/capability.h>

#include <algorithm>
#include <cctype>
#include <memory>

#include "common/error.hpp"
#include "common/file.hpp"

namespace aishell::runtime {

namespace {

std::string upper(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return s;
}

bool is_all(const std::string& s) { return upper(s) == "ALL"; }

}  // namespace

std::uint64_t default_capabilities() {
    std::uint64_t set = 0;
    for (int cap : {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER, CAP_MKNOD, CAP_NET_RAW, CAP_SETGID,
                    CAP_SETUID, CAP_SETFCAP, CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL,
                    CAP_AUDIT_WRITE})
        set |= 1ull << cap;
    return set;
}

std::uint64_t all_capabilities() {
    unsigned last = CAP_LAST_CAP;
    if (auto text = read_file_if_exists("/proc/sys/kernel/cap_last_cap", 64)) {
        try {
            last = static_cast<unsigned>(std::stoul(*text));
        } catch (...) {
        }
    }
    if (last >= 63) return ~0ull;
    return (1ull << (last + 1)) - 1;
}

int capability_from_name(const std::string& name) {
    std::string n = upper(name);
    if (n.rfind("CAP_", 0) != 0) n = "CAP_" + n;
    std::string lower = n;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    cap_value_t v = 0;
    if (::cap_from_name(lower.c_str(), &v) != 0 || v < 0 || v > 63)
        throw Error("unknown capability '" + name + "'", "names as in capabilities(7), e.g. CAP_NET_ADMIN or NET_ADMIN");
    return v;
}

std::string capability_name(int cap) {
    std::unique_ptr<char, decltype(&::cap_free)> text(::cap_to_name(cap), &::cap_free);
    return text ? upper(text.get()) : "CAP_" + std::to_string(cap);
}

std::uint64_t compute_capabilities(const std::vector<std::string>& add, const std::vector<std::string>& drop) {
    std::uint64_t set = default_capabilities();
    if (std::any_of(drop.begin(), drop.end(), is_all)) set = 0;
    if (std::any_of(add.begin(), add.end(), is_all)) set = all_capabilities();
    for (const auto& d : drop)
        if (!is_all(d)) set &= ~(1ull << capability_from_name(d));
    for (const auto& a : add)
        if (!is_all(a)) set |= 1ull << capability_from_name(a);
    return set;
}

std::vector<std::string> capability_names(std::uint64_t set) {
    std::vector<std::string> out;
    for (int cap = 0; cap < 64; ++cap)
        if (set & (1ull << cap)) out.push_back(capability_name(cap));
    return out;
}

}  // namespace aishell::runtime
