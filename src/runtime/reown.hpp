// Layer trees re-owned for another id mapping (`--userns=keep-id` in subuid mode, as podman
// does): the store's trees are owned for its mapping M (container 0 = the caller); keep-id
// runs under K (the caller = its own uid, container 0 = the first sub id). A copy of each layer
// whose owners are shifted so every file shows the same container owner under K as the
// original does under M is made once, inside a user namespace with M (which maps every host
// id both mappings use), and cached beside layers/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/idmap.hpp"

namespace aishell::runtime {

// For a namespace with mapping `from` (where the tree is read), the owner that a file owned
// by container id u must get so that under `to` it shows as u again: from⁻¹(to(u)).
// Empty when u is not mapped by `to` or to(u) not by `from`.
struct OwnerShift {
    std::function<std::optional<std::uint32_t>(std::uint32_t)> uid, gid;
};
OwnerShift owner_shift(const IdMapping& from, const IdMapping& to);

struct ReownStats {
    std::uint64_t entries = 0;
    std::uint64_t skipped_devices = 0;  // device nodes other than whiteouts (cannot be made in a userns)
};

// Copies the tree src to dst (which must not exist) with every owner shifted; keeps modes
// (setuid/setgid included), times, hardlinks, symlinks, whiteouts (0/0 char devices), fifos and
// xattrs (security.capability gets its root id shifted too). Throws Error naming the path.
ReownStats copy_tree_reowned(const std::filesystem::path& src, const std::filesystem::path& dst, const OwnerShift& shift);

// Dir holding the trees re-owned for mapping `to` (a sibling of layers/, keyed by the mapping).
std::filesystem::path reowned_layers_dir(const std::filesystem::path& store_root, const IdMapping& to);

// Every such dir in the store (one per keep-id mapping used), for garbage collection, which
// sweeps their trees by the rule it applies to layers/ (oci::GcOptions::layer_copy_dirs).
std::vector<std::filesystem::path> reowned_layers_dirs(const std::filesystem::path& store_root);

// Makes <reowned dir>/<hex> for every layer in `layers` that lacks one, by re-executing aishell
// (`__reown`) in a user namespace with the store's mapping. Returns that dir.
std::filesystem::path ensure_reowned_layers(const std::filesystem::path& store_root, const IdMapping& store_mapping,
                                            const IdMapping& to, const std::vector<std::string>& layers);

// Body of the hidden `aishell __reown STORE_ROOT FROM_MAPPING TO_MAPPING HEX...`.
int reown_layers_here(const std::vector<std::string>& args);

}  // namespace aishell::runtime
