// Pushing an image from the store to a registry (the distribution spec's "push" workflow):
// every blob is checked with HEAD and skipped when the repository has it, mounted from another
// repository of the same registry when the store recorded one as its source
// (oci/blob_sources.hpp), else uploaded: in one PUT when small, streamed in one PATCH when
// large (as Docker and skopeo do), or in Content-Range chunks when asked. The manifest goes
// last, with its exact bytes and media type, so a push that fails leaves no tag naming blobs
// the registry does not have. A cut upload starts over with a new upload session (a registry
// keeps what a cut PATCH delivered, so the same request cannot simply be sent again).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/blob_sources.hpp"
#include "oci/store.hpp"
#include "registry/client.hpp"
#include "registry/http.hpp"
#include "registry/pull.hpp"
#include "registry/reference.hpp"

namespace aishell::registry {

// Blobs up to this size go in one request (POST, then PUT with the body), saving the PATCH
// round trip that is most of the time of a config or a small layer. Larger ones are streamed
// in one PATCH and closed with an empty PUT: the path Docker and skopeo take for every layer
// (containers/image docker_image_dest.go PutBlobWithOptions), which registries and the proxies
// in front of them are built for; some limit the body a PUT may carry.
inline constexpr std::uint64_t kMonolithicUploadMax = 1024 * 1024;

enum class UploadMethod { Monolithic, Streamed, Chunked };
// chunk_size 0: no --chunk-size. A blob that fits in one chunk is not chunked.
UploadMethod choose_upload_method(std::uint64_t size, std::uint64_t chunk_size);

// The URL to send an upload session's next request to: the Location header of the registry's
// last answer, resolved against the URL that answer came from (distribution sends a path;
// others send absolute URLs, possibly to another host).
std::string upload_location(std::string_view answered_url, std::optional<std::string_view> location);
// url with key=value added to its query (after '?' or '&'); value is percent-encoded.
std::string add_query(std::string_view url, std::string_view key, std::string_view value);
// The Content-Range of a chunk: "<first>-<last>" (inclusive byte offsets, no unit, as the
// distribution spec has it).
std::string chunk_content_range(std::uint64_t offset, std::uint64_t length);
// A registry's Range header after a PATCH, "0-<last>": how many bytes the session holds.
// distribution writes "0-0" for both 0 and 1 byte; the caller knows which it sent.
// nullopt when malformed.
std::optional<std::uint64_t> parse_upload_range(std::string_view value);
// The repository to mount a blob from: the most recently recorded source in the same registry
// and another repository; nullopt when there is none.
std::optional<std::string> choose_mount_source(const std::vector<oci::BlobSource>& sources,
                                               std::string_view registry, std::string_view repository);

struct PushOptions {
    bool tls_verify = true;
    int parallel = 4;
    std::uint64_t chunk_size = 0;  // --chunk-size; 0: none
    RetryPolicy retry;
    DebugLog debug;
    const std::atomic<bool>* cancel = nullptr;
    PullObserver* observer = nullptr;  // the same events as a pull's
    TransportFactory transports;        // for tests; default: libcurl with ~/.aishell/certs.d
};

struct PushResult {
    std::string name;          // the reference pushed to
    oci::Descriptor manifest;  // what it now names
    std::size_t uploaded = 0, mounted = 0, present = 0;  // blobs
    std::uint64_t uploaded_bytes = 0;
};

// Pushes the image the store names `image` to target. Holds a lease on the blobs it reads.
PushResult push_image(oci::Store& store, const oci::ImageEntry& image, const Reference& target,
                      const PushOptions& options);

}  // namespace aishell::registry
