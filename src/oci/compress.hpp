// Streaming compression for the blobs aishell writes: layers (layer_write) and the gzip copies
// of zstd layers an image archive carries for Docker (archive_write). Each compressor hands its
// output to a callback in chunks of at most 1 MiB, so memory stays bounded whatever the size.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "oci/media_types.hpp"

namespace aishell::oci {

// Where compressed bytes go (a BlobWriter, a spool file). May throw.
using ByteOutput = std::function<void(const void* data, std::size_t size)>;

class Compressor {
public:
    virtual ~Compressor() = default;
    virtual void write(const void* data, std::size_t size) = 0;
    virtual void finish() = 0;  // flushes the end of the stream (gzip trailer, zstd epilogue)
};

// level 0: the method's default here (gzip 1: fastest, which matters more than size for
// layers; zstd 3). None passes the bytes through.
std::unique_ptr<Compressor> make_compressor(ByteOutput out, media_type::Compression compression, int level = 0);

// Streaming zstd decompression (RFC 8878 frames, one or several in a row, as zstd layers may
// be written by concatenation), in output chunks of ZSTD_DStreamOutSize() (128 KiB).
class ZstdDecompressor {
public:
    explicit ZstdDecompressor(ByteOutput out);
    ~ZstdDecompressor();
    ZstdDecompressor(const ZstdDecompressor&) = delete;
    ZstdDecompressor& operator=(const ZstdDecompressor&) = delete;
    void write(const void* data, std::size_t size);  // throws Error("zstd: ...") on corrupt input
    void finish();  // throws Error when the input ended inside a frame

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace aishell::oci
