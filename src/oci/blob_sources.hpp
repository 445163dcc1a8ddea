// Where the store's blobs came from: for each blob, the registries and repositories it was
// pulled from or pushed to, so a push can ask a registry to mount a blob it already holds in
// another repository instead of uploading it again (the distribution spec's cross-repository
// blob mount; Docker keeps the same facts in its "v2metadata" store for the same purpose).
//
//   <root>/sources/<hex>   one line per source: "<registry> <repository>\n", appended, oldest
//                          first, at most kMaxBlobSources lines
//
// An optimisation only: a blob without a record (or a store without sources/) is simply
// uploaded, and a wrong record costs one refused mount. Content cannot go wrong through it:
// the registry checks that the source repository holds a blob of that digest.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "oci/digest.hpp"

namespace aishell::oci {

class Store;

inline constexpr std::size_t kMaxBlobSources = 16;

struct BlobSource {
    std::string registry;    // a reference's domain: "127.0.0.1:5000", "docker.io"
    std::string repository;  // "team/base", "library/debian"
    bool operator==(const BlobSource&) const = default;
};

std::filesystem::path blob_sources_path(const Store& store, const Digest& blob);
// The lines of a record; malformed lines (a space inside a name, a missing field) are skipped.
std::vector<BlobSource> parse_blob_sources(std::string_view text);
// The sources recorded for blob, oldest first; empty when none is.
std::vector<BlobSource> read_blob_sources(const Store& store, const Digest& blob);
// Appends source unless the record already has it or is full. Throws Error naming the file.
void record_blob_source(const Store& store, const Digest& blob, const BlobSource& source);

}  // namespace aishell::oci
