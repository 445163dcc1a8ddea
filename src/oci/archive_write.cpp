// Images -> one tar stream that is an OCI layout and a Docker archive. See archive_write.hpp.
#include "oci/archive_write.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <memory>
#include <set>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "oci/archive_api.hpp"
#include "oci/compress.hpp"

namespace aishell::oci::image_archive {

namespace {

constexpr std::size_t kChunk = 1 << 20;

// ---- the plan ------------------------------------------------------------------------------

class PlanBuilder {
public:
    PlanBuilder(Sides sides, const std::map<Digest, Descriptor>& copies) : sides_(sides), copies_(copies) {}

    void add(const SaveImage& s) {
        const Image& image = s.image;
        bool oci = sides_ != Sides::Docker;
        bool docker = sides_ != Sides::Oci;
        if (oci) blob(image.manifest_descriptor.digest, image.manifest_descriptor.size);
        blob(image.manifest.config.digest, image.manifest.config.size);
        std::vector<std::string> docker_layers;
        for (const auto& layer : image.manifest.layers) {
            bool copy = docker && docker_needs_gzip_copy(layer);
            if (oci || !copy) blob(layer.digest, layer.size);
            if (!docker) continue;
            const Descriptor* d = &layer;
            if (copy) {
                auto it = copies_.find(layer.digest);
                if (it == copies_.end())
                    throw Error("save " + image.name + ": no gzip copy of zstd layer " + layer.digest.str());
                d = &it->second;
                blob(d->digest, d->size, true);
            }
            docker_layers.push_back(blob_member(d->digest));
        }
        if (oci) add_index_entry(s);
        if (docker) add_docker_item(s, std::move(docker_layers));
    }

    ArchivePlan finish() {
        ArchivePlan plan;
        if (sides_ != Sides::Docker) {
            plan.documents.emplace_back(kOciLayoutFile, kOciLayoutContent);
            plan.documents.emplace_back(kIndexFile, archive_index_json(index_));
        }
        if (sides_ != Sides::Oci) {
            plan.documents.emplace_back(kDockerManifestFile, docker_archive_manifest_to_json(items_) + "\n");
            if (std::string repositories = repositories_json(items_); !repositories.empty())
                plan.documents.emplace_back(kRepositoriesFile, std::move(repositories));
        }
        plan.blobs = std::move(blobs_);
        return plan;
    }

private:
    void blob(const Digest& digest, std::int64_t size, bool copy = false) {
        if (seen_.insert(digest).second) blobs_.push_back({digest, size, copy});
    }

    // Two names of one image: one index entry each, for the same manifest.
    void add_index_entry(const SaveImage& s) {
        for (auto& entry : index_) {
            if (entry.manifest.digest == s.image.manifest_descriptor.digest) {
                add_names(entry.names, s.names);
                return;
            }
        }
        IndexImage entry{s.image.manifest_descriptor, {}};
        add_names(entry.names, s.names);
        index_.push_back(std::move(entry));
    }

    // One manifest.json item per image (save.go: per image ID) with all its RepoTags.
    void add_docker_item(const SaveImage& s, std::vector<std::string> layers) {
        std::string config = blob_member(s.image.manifest.config.digest);
        DockerArchiveImage* item = nullptr;
        for (auto& existing : items_)
            if (existing.config == config && existing.layers == layers) item = &existing;
        if (!item) item = &items_.emplace_back(DockerArchiveImage{config, {}, std::move(layers)});
        for (const auto& name : s.names) {
            if (name.repo_tag.empty()) continue;
            if (std::find(item->repo_tags.begin(), item->repo_tags.end(), name.repo_tag) == item->repo_tags.end())
                item->repo_tags.push_back(name.repo_tag);
        }
    }

    static void add_names(std::vector<ArchiveName>& to, const std::vector<ArchiveName>& names) {
        for (const auto& n : names)
            if (std::find(to.begin(), to.end(), n) == to.end()) to.push_back(n);
    }

    Sides sides_;
    const std::map<Digest, Descriptor>& copies_;
    std::set<Digest> seen_;
    std::vector<ArchiveBlob> blobs_;
    std::vector<IndexImage> index_;
    std::vector<DockerArchiveImage> items_;
};

// ---- gzip copies of zstd layers ------------------------------------------------------------

// Reads a store blob in chunks, checking its length and digest at the end.
void read_blob_chunks(const Store& store, const Digest& digest, std::int64_t size,
                      const std::function<void(const char*, std::size_t)>& chunk, const std::function<void()>& checkpoint,
                      int fd = -1) {
    UniqueFd own;
    if (fd < 0) {
        own = open_file(store.blob_path(digest), O_RDONLY);
        fd = own.get();
        (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    std::vector<char> buffer(kChunk);
    Sha256 sha;
    for (;;) {
        if (checkpoint) checkpoint();
        ssize_t n = ::read(fd, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read blob", digest.str());
        if (n == 0) break;
        sha.update(buffer.data(), static_cast<std::size_t>(n));
        if (sha.bytes() > static_cast<std::uint64_t>(size))
            throw Error("blob " + digest.str() + " is longer than the " + std::to_string(size) +
                        " bytes its descriptor says", "the store is damaged: aishell pull or build the image again");
        chunk(buffer.data(), static_cast<std::size_t>(n));
    }
    if (sha.bytes() != static_cast<std::uint64_t>(size))
        throw Error("blob " + digest.str() + " is " + std::to_string(sha.bytes()) + " bytes, its descriptor says " +
                        std::to_string(size),
                    "the store is damaged: aishell pull or build the image again");
    if (Digest got = sha.finish(); got != digest)
        throw Error("blob " + digest.str() + " does not match its digest (its bytes hash to " + got.str() + ")",
                    "the store is damaged: aishell pull or build the image again");
}

struct GzipCopy {
    Descriptor descriptor;
    TempFile file;  // in the store's tmp/, removed when the save ends
};

GzipCopy make_gzip_copy(const Store& store, const Descriptor& layer, const Digest& diff_id,
                        const std::function<void()>& checkpoint) {
    TempFile file(store.tmp_dir(), "save-gzip", 0600);
    Sha256 gzip_sha;
    auto gzip = make_compressor(
        [&](const void* data, std::size_t size) {
            gzip_sha.update(data, size);
            write_all(file.fd(), std::string_view(static_cast<const char*>(data), size), file.path().string());
        },
        media_type::Compression::Gzip);
    Sha256 tar_sha;
    ZstdDecompressor zstd([&](const void* data, std::size_t size) {
        tar_sha.update(data, size);
        gzip->write(data, size);
    });
    read_blob_chunks(store, layer.digest, layer.size, [&](const char* data, std::size_t size) { zstd.write(data, size); }, checkpoint);
    zstd.finish();
    gzip->finish();
    if (Digest got = tar_sha.finish(); got != diff_id)
        throw Error("layer " + layer.digest.str() + " uncompresses to " + got.str() + ", not its diff_id " + diff_id.str(),
                    "the store is damaged: aishell pull or build the image again");
    Descriptor d;
    d.media_type = std::string(media_type::kOciLayerGzip);
    d.size = static_cast<std::int64_t>(gzip_sha.bytes());
    d.digest = gzip_sha.finish();
    return {std::move(d), std::move(file)};
}

std::map<Digest, GzipCopy> make_gzip_copies(const Store& store, const std::vector<SaveImage>& images,
                                            const ArchiveWriteOptions& options) {
    std::map<Digest, GzipCopy> copies;
    if (options.sides == Sides::Oci) return copies;
    for (const auto& s : images) {
        auto diff_ids = s.image.config.diff_ids();
        for (std::size_t i = 0; i < s.image.manifest.layers.size(); ++i) {
            const Descriptor& layer = s.image.manifest.layers[i];
            if (!docker_needs_gzip_copy(layer) || copies.count(layer.digest)) continue;
            if (options.notice)
                options.notice("converting zstd layer " + layer.digest.short_form() +
                               " to gzip for the Docker side (Docker before 23 cannot read zstd; --format oci "
                               "skips it)");
            try {
                copies.emplace(layer.digest, make_gzip_copy(store, layer, diff_ids.at(i), options.checkpoint));
            } catch (Error& e) {
                e.add_context("save " + s.image.name + ": gzip copy of layer " + layer.digest.str());
                throw;  // as it is: `throw e` would slice an Interrupted into an Error (exit 1, not 130)
            }
        }
    }
    return copies;
}

// ---- the tar stream ------------------------------------------------------------------------

struct ArchiveWriteDeleter {
    void operator()(::archive* a) const noexcept { archive_write_free(a); }
};
struct EntryDeleter {
    void operator()(archive_entry* e) const noexcept { archive_entry_free(e); }
};

struct FdSink {
    int fd = -1;
    bool stream = false;  // a pipe or a socket: writes wait in before_write, not in write(2)
    std::function<void(int)> before_write;
    std::exception_ptr error;  // an exception cannot cross libarchive's C frames
};

bool is_stream(int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

// How much one write(2) to a writable stream may carry without blocking: an empty pipe takes
// its whole capacity (F_GETPIPE_SZ); otherwise PIPE_BUF, which a pipe that polls writable
// (a free page slot, pipe(7)) and a socket above its low-water mark take at once.
std::size_t writable_bytes(int fd) {
    int queued = 0;
    if (::ioctl(fd, FIONREAD, &queued) == 0 && queued == 0) {
        int capacity = ::fcntl(fd, F_GETPIPE_SZ);
        if (capacity > 0) return static_cast<std::size_t>(capacity);
    }
    return PIPE_BUF;
}

void write_stream(FdSink& sink, std::string_view data) {
    while (!data.empty()) {
        sink.before_write(sink.fd);
        ssize_t n = ::write(sink.fd, data.data(), std::min(data.size(), writable_bytes(sink.fd)));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("write", "the archive");
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

// A failure is kept in the sink and the data reported written: a callback that returns -1 puts
// libarchive in its fatal state, where archive_write_free skips the close that frees the
// client's block buffer (1 MiB leaked, which LeakSanitizer turns into exit 1 after a Ctrl-C).
// TarStream rethrows the kept failure after each call into libarchive; later blocks (the
// close in free) are dropped.
la_ssize_t fd_write_callback(::archive*, void* client, const void* buffer, size_t length) {
    auto* sink = static_cast<FdSink*>(client);
    if (sink->error) return static_cast<la_ssize_t>(length);
    try {
        std::string_view data(static_cast<const char*>(buffer), length);
        if (sink->stream && sink->before_write) write_stream(*sink, data);
        else write_all(sink->fd, data, "the archive");
        return static_cast<la_ssize_t>(length);
    } catch (...) {
        sink->error = std::current_exception();
        return static_cast<la_ssize_t>(length);
    }
}

// A tar of regular files and directories, owned by 0:0 with mtime 0, so that the same images
// give the same bytes (Docker 25 sets its metadata files' times to the epoch too).
class TarStream {
public:
    TarStream(int fd, std::function<void()> checkpoint, std::function<void(int)> before_write)
        : a_(archive_write_new()), checkpoint_(std::move(checkpoint)) {
        if (!a_) throw Error("out of memory");
        sink_.fd = fd;
        sink_.stream = is_stream(fd);
        sink_.before_write = std::move(before_write);
        // PAX restricted: ustar headers, a pax record only for what ustar cannot hold (a blob
        // over 8 GiB), as Go's archive/tar writes Docker's.
        archive_write_set_format_pax_restricted(a_.get());
        // One write(2) per 1 MiB: with 512-byte blocks libarchive made one write per tar block
        // (~190,000 for a 95 MB image), most of the save's time on a loaded machine. The last
        // block is not padded (bytes_in_last_block 1), so the bytes are the same as with 512:
        // the end-of-archive blocks and nothing after them, as Go's archive/tar writes.
        archive_write_set_bytes_per_block(a_.get(), static_cast<int>(kChunk));
        archive_write_set_bytes_in_last_block(a_.get(), 1);
        if (archive_write_open2(a_.get(), &sink_, nullptr, fd_write_callback, nullptr, nullptr) != ARCHIVE_OK)
            fail("open");
    }

    void directory(const std::string& name) { header(name, AE_IFDIR, 0755, 0); }

    void file(const std::string& name, std::string_view content) {
        header(name, AE_IFREG, 0644, content.size());
        data(content.data(), content.size());
    }

    // A blob member, copied from fd (a store blob or a gzip copy) and checked as it goes.
    void blob(const Store& store, const ArchiveBlob& b, int fd) {
        header(blob_member(b.digest), AE_IFREG, 0644, static_cast<std::uint64_t>(b.size));
        read_blob_chunks(store, b.digest, b.size, [this](const char* p, std::size_t n) { data(p, n); }, checkpoint_,
                         fd);
    }

    void close() {
        if (archive_write_close(a_.get()) != ARCHIVE_OK || sink_.error) fail("finish");
    }

private:
    void header(const std::string& name, unsigned type, unsigned perm, std::uint64_t size) {
        std::unique_ptr<archive_entry, EntryDeleter> e(archive_entry_new());
        if (!e) throw Error("out of memory");
        archive_entry_set_pathname(e.get(), name.c_str());
        archive_entry_set_filetype(e.get(), type);
        archive_entry_set_perm(e.get(), perm);
        archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
        archive_entry_set_mtime(e.get(), 0, 0);
        archive_entry_set_uid(e.get(), 0);
        archive_entry_set_gid(e.get(), 0);
        if (archive_write_header(a_.get(), e.get()) != ARCHIVE_OK || sink_.error) fail("write " + name);
    }

    void data(const char* p, std::size_t n) {
        while (n > 0) {
            la_ssize_t w = archive_write_data(a_.get(), p, n);
            if (w <= 0 || sink_.error) fail("write");
            p += w;
            n -= static_cast<std::size_t>(w);
        }
    }

    [[noreturn]] void fail(const std::string& what) {
        if (sink_.error) std::rethrow_exception(sink_.error);
        throw Error("archive: " + what + ": " + archive_error_string(a_.get()));
    }

    std::unique_ptr<::archive, ArchiveWriteDeleter> a_;
    std::function<void()> checkpoint_;
    FdSink sink_;
};

}  // namespace

bool docker_needs_gzip_copy(const Descriptor& layer) {
    return is_layer_media_type(layer.media_type) && layer_compression(layer.media_type) == media_type::Compression::Zstd;
}

ArchivePlan plan_archive(const std::vector<SaveImage>& images, Sides sides, const std::map<Digest, Descriptor>& gzip_copies) {
    PlanBuilder builder(sides, gzip_copies);
    for (const auto& image : images) builder.add(image);
    return builder.finish();
}

void write_image_archive(const Store& store, const std::vector<SaveImage>& images, int out_fd,
                         const ArchiveWriteOptions& options) {
    std::map<Digest, GzipCopy> copies = make_gzip_copies(store, images, options);
    std::map<Digest, Descriptor> copy_descriptors;
    for (const auto& [layer, copy] : copies) copy_descriptors.emplace(layer, copy.descriptor);
    ArchivePlan plan = plan_archive(images, options.sides, copy_descriptors);
    std::map<Digest, int> copy_fds;
    for (const auto& [layer, copy] : copies) copy_fds.emplace(copy.descriptor.digest, copy.file.fd());

    ScopedCtype ctype(ScopedCtype::Kind::Utf8);  // member names are ASCII; pinned as layer_write does
    TarStream tar(out_fd, options.checkpoint, options.before_write);
    with_context("save", [&] {  // a failed write of these names the save, as a blob's does
        for (const auto& [name, content] : plan.documents) tar.file(name, content);
        if (!plan.blobs.empty()) {
            tar.directory(std::string(kBlobsDir) + "/");
            tar.directory(std::string(kBlobsDir) + "/sha256/");
        }
    });
    for (const auto& b : plan.blobs) {
        try {
            int fd = -1;
            if (b.gzip_copy) {
                fd = copy_fds.at(b.digest);
                if (::lseek(fd, 0, SEEK_SET) < 0) throw_errno("seek", "gzip copy of " + b.digest.str());
            }
            tar.blob(store, b, fd);
        } catch (Error& e) {
            e.add_context("save: blob " + b.digest.str());
            throw;  // as it is: `throw e` would slice an Interrupted into an Error (exit 1, not 130)
        }
    }
    with_context("save", [&] { tar.close(); });
}

}  // namespace aishell::oci::image_archive
