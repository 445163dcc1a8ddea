// Running an image of the store: the whole sequence behind `aishell exec`, as a list of steps —
// pick the id mapping (checked against the store's), unpack missing layers inside the user
// namespace, build the container spec (process, mounts, capabilities, seccomp), run it in a
// fresh run dir under tmp/, and remove that dir afterwards.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "oci/image.hpp"
#include "oci/store.hpp"
#include "runtime/container.hpp"
#include "runtime/mounts.hpp"
#include "runtime/process.hpp"

namespace aishell::runtime {

struct RunOptions {
    ProcessOptions process;
    std::vector<BindSpec> binds;            // resolved binds before -v's (the project, the ssh agent)
    std::vector<std::string> volumes;       // -v HOST:CONTAINER[:ro] or -v NAME:CONTAINER (a named volume)
    Network network = Network::Host;
    std::vector<std::string> cap_add, cap_drop;
    std::vector<std::string> security_opts;  // seccomp=unconfined|PATH, no-new-privileges[=true|false]
    bool interactive = false;
    bool keep_run_dir = false;
};

// Runs image under a lease on its blobs and trees (and named volumes), held until the command
// is over; throws Error for failures before the command starts (status 125 for the caller).
// The command's user, when not root, is the caller (choose_mapping_as): what it makes in a
// bound dir is the caller's on the host.
RunResult exec_image(oci::Store& store, const oci::Image& image, const RunOptions& options);

// The store's id mapping for this caller, recorded in meta.json on first use; refuses a store
// whose layers were unpacked for another mapping.
IdMapping store_mapping(oci::Store& store);
IdMapping store_mapping(oci::Store& store, const HostIds& host);  // with the host already probed

// Layer dirs (top first) of image, unpacked inside the user namespace when missing. Through a
// store with a lease (oci/lease.hpp) the image is leased before its trees are looked for, and
// the trees unpacked here are recorded in the lease as made.
std::vector<std::string> ensure_image_layers(oci::Store& store, const oci::Image& image, const IdMapping& mapping);

// Body of the hidden `aishell __unpack STORE ERROR_FILE LEASE|- (MEDIATYPE DIGEST SIZE DIFFID)...`,
// run inside the user namespace by ensure_image_layers.
int unpack_layers_here(const std::vector<std::string>& args);

}  // namespace aishell::runtime
