// Streaming gzip (zlib) and zstd compression. See compress.hpp.
#include "oci/compress.hpp"

#include <zlib.h>
#include <zstd.h>

#include <string>
#include <vector>

#include "common/error.hpp"

namespace aishell::oci {

namespace {

using media_type::Compression;

constexpr std::size_t kChunk = 1 << 20;

class PlainSink final : public Compressor {
public:
    explicit PlainSink(ByteOutput out) : out_(std::move(out)) {}
    void write(const void* data, std::size_t size) override { out_(data, size); }
    void finish() override {}

private:
    ByteOutput out_;
};

class GzipSink final : public Compressor {
public:
    GzipSink(ByteOutput out, int level) : out_(std::move(out)), buffer_(kChunk) {
        // windowBits 15 + 16: a gzip header and trailer, as `gzip` writes.
        if (deflateInit2(&z_, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            throw Error("gzip: cannot initialise the compressor");
        initialised_ = true;
    }
    ~GzipSink() override {
        if (initialised_) deflateEnd(&z_);
    }
    void write(const void* data, std::size_t size) override {
        z_.next_in = static_cast<Bytef*>(const_cast<void*>(data));
        z_.avail_in = static_cast<uInt>(size);
        pump(Z_NO_FLUSH);
    }
    void finish() override { pump(Z_FINISH); }

private:
    void pump(int flush) {
        for (;;) {
            z_.next_out = buffer_.data();
            z_.avail_out = static_cast<uInt>(buffer_.size());
            int rc = deflate(&z_, flush);
            if (rc == Z_STREAM_ERROR) throw Error("gzip: compression failed");
            out_(buffer_.data(), buffer_.size() - z_.avail_out);
            if (flush == Z_FINISH ? rc == Z_STREAM_END : (z_.avail_in == 0 && z_.avail_out != 0)) return;
        }
    }
    ByteOutput out_;
    std::vector<unsigned char> buffer_;
    z_stream z_{};
    bool initialised_ = false;
};

class ZstdSink final : public Compressor {
public:
    ZstdSink(ByteOutput out, int level) : out_(std::move(out)), cctx_(ZSTD_createCCtx()), buffer_(ZSTD_CStreamOutSize()) {
        if (!cctx_) throw Error("zstd: cannot create a compression context");
        ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_compressionLevel, level);
        ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_checksumFlag, 1);
    }
    void write(const void* data, std::size_t size) override {
        ZSTD_inBuffer in{data, size, 0};
        while (in.pos < in.size) pump(in, ZSTD_e_continue);
    }
    void finish() override {
        ZSTD_inBuffer in{nullptr, 0, 0};
        while (pump(in, ZSTD_e_end) != 0) {
        }
    }

private:
    std::size_t pump(ZSTD_inBuffer& in, ZSTD_EndDirective mode) {
        ZSTD_outBuffer out{buffer_.data(), buffer_.size(), 0};
        std::size_t remaining = ZSTD_compressStream2(cctx_.get(), &out, &in, mode);
        if (ZSTD_isError(remaining)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(remaining));
        out_(buffer_.data(), out.pos);
        return remaining;
    }
    struct CctxDeleter {
        void operator()(ZSTD_CCtx* c) const noexcept { ZSTD_freeCCtx(c); }
    };
    ByteOutput out_;
    std::unique_ptr<ZSTD_CCtx, CctxDeleter> cctx_;
    std::vector<unsigned char> buffer_;
};

}  // namespace

std::unique_ptr<Compressor> make_compressor(ByteOutput out, Compression c, int level) {
    switch (c) {
        case Compression::None: return std::make_unique<PlainSink>(std::move(out));
        case Compression::Gzip: return std::make_unique<GzipSink>(std::move(out), level ? level : 1);
        case Compression::Zstd: return std::make_unique<ZstdSink>(std::move(out), level ? level : 3);
    }
    throw Error("unknown layer compression");
}

struct ZstdDecompressor::State {
    struct DctxDeleter {
        void operator()(ZSTD_DCtx* d) const noexcept { ZSTD_freeDCtx(d); }
    };
    ByteOutput out;
    std::unique_ptr<ZSTD_DCtx, DctxDeleter> dctx{ZSTD_createDCtx()};
    std::vector<unsigned char> buffer = std::vector<unsigned char>(ZSTD_DStreamOutSize());
    std::size_t pending = 0;  // ZSTD_decompressStream's last hint: 0 when a frame is complete
};

ZstdDecompressor::ZstdDecompressor(ByteOutput out) : state_(std::make_unique<State>()) {
    if (!state_->dctx) throw Error("zstd: cannot create a decompression context");
    state_->out = std::move(out);
}

ZstdDecompressor::~ZstdDecompressor() = default;

void ZstdDecompressor::write(const void* data, std::size_t size) {
    ZSTD_inBuffer in{data, size, 0};
    while (in.pos < in.size) {
        ZSTD_outBuffer out{state_->buffer.data(), state_->buffer.size(), 0};
        std::size_t rc = ZSTD_decompressStream(state_->dctx.get(), &out, &in);
        if (ZSTD_isError(rc)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(rc));
        state_->pending = rc;
        if (out.pos) state_->out(state_->buffer.data(), out.pos);
    }
}

void ZstdDecompressor::finish() {
    // The decoder may still hold output of a complete frame (its buffer was full): drain it.
    for (;;) {
        ZSTD_inBuffer in{nullptr, 0, 0};
        ZSTD_outBuffer out{state_->buffer.data(), state_->buffer.size(), 0};
        std::size_t rc = ZSTD_decompressStream(state_->dctx.get(), &out, &in);
        if (ZSTD_isError(rc)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(rc));
        // With nothing left to flush, rc is the hint for a next frame's header: not news.
        if (out.pos == 0) break;
        state_->pending = rc;
        state_->out(state_->buffer.data(), out.pos);
    }
    if (state_->pending != 0) throw Error("zstd: the stream ends inside a frame (truncated)");
}

}  // namespace aishell::oci
