// Capability sets as bit masks: Docker's default 14, names parsed with libcap (cap_from_name),
// and the --cap-add / --cap-drop arithmetic (ALL supported; see compute_capabilities).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace aishell::runtime {

// CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP NET_BIND_SERVICE
// SYS_CHROOT KILL AUDIT_WRITE (moby oci/caps/defaults.go).
std::uint64_t default_capabilities();

// All capabilities this kernel knows (0..cap_last_cap).
std::uint64_t all_capabilities();

// "CAP_SYS_ADMIN", "sys_admin" or "SYS_ADMIN" -> number; throws Error for an unknown name.
int capability_from_name(const std::string& name);
std::string capability_name(int cap);  // "CAP_SYS_ADMIN"

// Docker's rules: start from the default set; "ALL" in drops empties it, "ALL" in adds fills it;
// then named drops, then named adds.
std::uint64_t compute_capabilities(const std::vector<std::string>& add, const std::vector<std::string>& drop);

std::vector<std::string> capability_names(std::uint64_t set);

}  // namespace aishell::runtime
