// User namespace id mappings: which host ids a container's ids stand for, how aishell picks the
// mode (subuid / single / root), how a mapping is written for a child process, and the key
// that names it in the store (layer trees are owned according to exactly one mapping).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aishell::runtime {

enum class UsernsMode {
    Subuid,  // container 0 = caller, 1..N = the caller's /etc/subuid range (newuidmap)
    Single,  // only the caller is mapped (to 0, or to itself with keep-id); setgroups denied
    Root,    // aishell runs as real root: the identity mapping of the whole id space
};

std::string_view mode_name(UsernsMode mode) noexcept;

// One line of a uid_map/gid_map: `inside outside count`.
struct IdRange {
    std::uint32_t inside = 0;
    std::uint32_t outside = 0;
    std::uint32_t count = 0;
    friend bool operator==(const IdRange&, const IdRange&) = default;
};

struct IdMapping {
    UsernsMode mode = UsernsMode::Single;
    std::vector<IdRange> uids;
    std::vector<IdRange> gids;

    // "subuid u=0:1000:1,1:100000:65536 g=0:1000:1,1:100000:65536": stable text recorded in the
    // store's meta under "idmap".
    std::string to_string() const;
    static IdMapping parse(std::string_view text);  // throws Error
    // Inside id for a host id, when mapped.
    std::optional<std::uint32_t> uid_inside(std::uint32_t host) const;
    std::optional<std::uint32_t> gid_inside(std::uint32_t host) const;
    bool uid_mapped_inside(std::uint32_t inside) const;
    bool gid_mapped_inside(std::uint32_t inside) const;
    friend bool operator==(const IdMapping&, const IdMapping&) = default;
};

// A subordinate id range from /etc/subuid or /etc/subgid content ("name:start:count" or
// "uid:start:count" lines); the first line for the user wins, as shadow's newuidmap reads them.
std::optional<IdRange> find_subid_range(std::string_view file_content, std::string_view user_name,
                                        std::uint32_t uid);

// What the mode choice depends on, gathered by probe_host() (a seam for the tests).
struct HostIds {
    uid_t uid = 0;
    gid_t gid = 0;
    std::string user_name;
    std::optional<IdRange> subuid;  // the caller's range, when /etc/subuid has one
    std::optional<IdRange> subgid;
    bool have_newidmap = false;     // newuidmap and newgidmap are installed
    std::string forced;             // $AISHELL_USERNS ("subuid", "single" or empty)
};

HostIds probe_host();

// The mapping for a run. keep_id maps the caller to its own uid/gid instead of 0: in single mode
// only that id; in subuid mode with the sub range around it (podman's layout, 0 = the first sub
// id), which needs layer trees re-owned for it (reown.hpp).
// Throws Error for a forced mode that cannot work (AISHELL_USERNS=subuid without a range).
IdMapping choose_mapping(const HostIds& host, bool keep_id);

// The mapping that makes the caller container uid:gid (podman's --userns=keep-id:uid=N,gid=N):
// in single mode that one id; in subuid mode with the sub range around it. 0:0 is the store's
// default mapping, the caller's own ids keep-id's. A run uses it for the user its command runs
// as, so what the command makes in a bound project belongs to the caller on the host. A
// non-default one needs layer trees re-owned for it in subuid mode (reown.hpp).
IdMapping choose_mapping_as(const HostIds& host, std::uint32_t uid, std::uint32_t gid);

// The mapping the store's layer trees were unpacked for ("idmap" in meta.json), or none yet.
// A run with another mapping is refused: trees owned for one mapping show wrong owners under
// another, and silently re-unpacking everything would double the store.
void check_store_mapping(const std::optional<std::string>& recorded, const IdMapping& wanted);

// Writes the maps of process pid (which waits meanwhile): newuidmap/newgidmap for subuid mode,
// /proc/pid/{setgroups,uid_map,gid_map} otherwise. Throws Error naming the tool or file.
void write_id_maps(pid_t pid, const IdMapping& mapping);

}  // namespace aishell::runtime
