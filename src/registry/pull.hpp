// Pulling an image into the store: resolve the reference to a manifest (negotiating media
// types, choosing a platform from an index), download config and layers in parallel into
// verified blobs, then name the manifest in index.json. Nothing becomes visible until every
// blob is present: blobs are committed and the index updated together under the store lock,
// and a failure removes the blobs this pull committed, so the store is left as it was
// (partial downloads stay in tmp/ for the next attempt to resume).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/store.hpp"
#include "oci/types.hpp"
#include "registry/client.hpp"
#include "registry/http.hpp"
#include "registry/reference.hpp"

namespace aishell::registry {

// Progress callbacks. Called from worker threads: implementations must be thread-safe.
class PullObserver {
public:
    virtual ~PullObserver() = default;
    virtual void on_manifest(const Reference&, const oci::Descriptor& /*manifest*/, std::size_t /*blobs*/) {}
    virtual void on_blob_skipped(const oci::Descriptor&) {}  // already in the store
    virtual void on_blob_started(const oci::Descriptor&, std::uint64_t /*resumed_from*/) {}
    virtual void on_blob_progress(const oci::Descriptor&, std::uint64_t /*bytes*/) {}
    virtual void on_blob_done(const oci::Descriptor&) {}
    virtual void on_message(std::string_view) {}  // retries, mirror fallback
};

struct PullOptions {
    std::optional<oci::Platform> platform;  // default: the host's
    bool tls_verify = true;
    std::optional<std::string> mirror;  // for docker.io; default $AISHELL_REGISTRY_MIRROR
    int parallel = 4;
    RetryPolicy retry;
    DebugLog debug;
    const std::atomic<bool>* cancel = nullptr;  // set from a signal watcher: stops the pull
    PullObserver* observer = nullptr;
    // For tests: how transports are made (default: libcurl with ~/.aishell/certs.d).
    TransportFactory transports;
};

struct PullResult {
    std::string name;              // the name in index.json: the normalized reference
    oci::Descriptor manifest;      // what the name points to (an image manifest)
    std::optional<oci::Digest> index_digest;  // the index it was chosen from, if any
    std::uint64_t downloaded_bytes = 0;
};

PullResult pull_image(oci::Store& store, const Reference& ref, const PullOptions& options);

// The blobs a manifest names: its config, then its layers, each digest once.
std::vector<oci::Descriptor> manifest_blobs(const oci::Manifest& manifest);

// The manifest to pull from an index: the best platform match among image manifests,
// passing over other media types and attestation entries (platform unknown/unknown).
// Throws Error naming the wanted platform and the ones available.
oci::Descriptor select_platform_manifest(const oci::Index& index, const oci::Platform& wanted);

// Downloads one blob into writer (which may hold a resumed prefix), resuming with Range
// after a cut, restarting when the server ignores Range. Does not commit. writer may be
// replaced by a fresh one (restart), hence the Store and the optional.
void fetch_blob(RegistryClient& client, Transport& transport, oci::Store& store, const std::string& repository,
                const oci::Descriptor& blob, std::optional<oci::BlobWriter>& writer,
                const std::function<void(std::uint64_t)>& progress);

}  // namespace aishell::registry
