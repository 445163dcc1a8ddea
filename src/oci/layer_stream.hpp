// A layer's uncompressed tar stream for extract_layer (layer_extract.cpp): the compressed blob
// read in 1 MiB blocks, decompressed (gzip with ISA-L, every member's CRC checked; zstd, and a
// "gzip" layer without gzip's magic bytes, through libarchive's filters), hashed as it is
// handed out, so decompression, hashing and extraction are one pass with bounded memory.
#pragma once

#include <archive.h>

#include <cstdint>
#include <memory>
#include <string>

#include "oci/digest.hpp"
#include "oci/media_types.hpp"

namespace aishell::oci {

struct ArchiveReadDeleter {
    void operator()(archive* a) const noexcept { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadDeleter>;

// libarchive's message for its last error on a, never null.
std::string archive_message(archive* a);

class HashingSource;

class LayerTarStream {
public:
    LayerTarStream(int fd, media_type::Compression compression);
    ~LayerTarStream();
    LayerTarStream(const LayerTarStream&) = delete;
    LayerTarStream& operator=(const LayerTarStream&) = delete;

    // The tar reader (ustar, pax, GNU) over the stream.
    archive* tar() const noexcept { return tar_.get(); }
    // Throws the error a read of the stream met: its callback must not throw through
    // libarchive's C frames, so the error waits until the tar reader returns.
    void rethrow_read_error() const;
    // The diff_id: the stream's sha256, what the tar reader left unread included.
    Digest finish();
    std::uint64_t bytes() const noexcept;  // uncompressed bytes so far

private:
    std::unique_ptr<HashingSource> source_;
    ArchiveReader tar_;
};

}  // namespace aishell::oci
