// Unpacking a layer blob of the store once into <store>/layers/<diff_id hex>/, the tree the
// runtime hands to overlayfs as a lowerdir. Called inside the user namespace (runtime's
// `aishell __unpack`) so owners land as mapped ids.
//
// Atomicity: the blob is extracted into <store>/tmp/unpack-<random>/, its diff_id is checked
// against the config's, the tree is synced (syncfs) and only then renamed to layers/<hex>.
// A failure removes the temp dir; an interrupted run leaves only tmp/unpack-* (GC sweeps it),
// never a half-filled layers/<hex>/. Two processes unpacking the same layer at once both
// extract; the first rename wins and the other discards its copy. Through a store with a lease
// (lease.hpp) the tree is leased before it is looked for, and recorded as made by the winner.
#pragma once

#include <filesystem>

#include "oci/digest.hpp"
#include "oci/layer_extract.hpp"
#include "oci/store.hpp"
#include "oci/types.hpp"

namespace aishell::oci {

namespace fs = std::filesystem;

struct UnpackResult {
    fs::path path;           // <store>/layers/<diff_id hex>
    bool unpacked = false;   // false when it was already there
    ExtractStats stats;      // zeroes when it was already there
};

// Ensures layers/<diff_id hex>/ holds the layer described by `layer` (its blob must be in the
// store; compression from its media type). Throws Error with context
// ("unpack layer sha256:ab12..: diff_id mismatch: config says sha256:.., tar is sha256:..")
// and leaves no layers/<hex>. Calls options.note (or writes to stderr) when something was skipped.
UnpackResult ensure_layer_unpacked(const Store& store, const Descriptor& layer, const Digest& diff_id,
                                   const ExtractOptions& options = {});

// The same for a tar stream not in the blob store (e.g. a layer being built): reads fd to its
// end and installs it as layers/<expected diff_id hex>.
UnpackResult unpack_layer_stream(const Store& store, int compressed_fd, media_type::Compression compression,
                                 const Digest& diff_id, const ExtractOptions& options = {});

}  // namespace aishell::oci
