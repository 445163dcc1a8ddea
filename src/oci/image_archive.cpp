// Image archives into the store. See image_archive.hpp.
#include "oci/image_archive.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <list>
#include <memory>
#include <set>

#include "common/error.hpp"
#include "oci/archive_api.hpp"
#include "oci/docker_archive.hpp"
#include "oci/image.hpp"
#include "oci/layer_write.hpp"
#include "oci/lease.hpp"

namespace aishell::oci {

namespace {

namespace mt = media_type;
using mt::Compression;

constexpr int kMaxLinkHops = 40;
constexpr int kMaxIndexDepth = 8;  // index.json -> index -> ... -> manifest
constexpr std::size_t kMaxMembers = 1'000'000;
constexpr std::size_t kReadBlock = 1 << 16;
constexpr std::string_view kContainerdNameAnnotation = "io.containerd.image.name";

struct ArchiveReadDeleter {
    void operator()(archive* a) const noexcept { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadDeleter>;

ArchiveReader new_reader() {
    ArchiveReader a(archive_read_new());
    if (!a) throw Error("libarchive: out of memory");
    return a;
}

std::string archive_message(archive* a) {
    const char* s = archive_error_string(a);
    return s ? s : "unknown libarchive error";
}

// Members whose bytes are read as JSON are refused above these sizes while they stream in, so a
// hostile archive cannot fill tmp/ with a 10 GB manifest.json.
std::optional<std::uint64_t> member_size_limit(const std::string& name) {
    if (name == "manifest.json" || name == "repositories" || name == "index.json" || name == "oci-layout")
        return kMaxDockerArchiveJsonSize;
    if (name.ends_with(".json")) return kMaxConfigSize;
    return std::nullopt;
}

// The members of Docker's legacy v1 layout that nothing reads (manifest.json superseded them).
bool is_legacy_v1_member(const std::string& name) {
    auto slash = name.find('/');
    if (slash == std::string::npos || name.find('/', slash + 1) != std::string::npos) return false;
    std::string_view base = std::string_view(name).substr(slash + 1);
    return base == "json" || base == "VERSION";
}

std::string parent_of(const std::string& name) {
    auto slash = name.rfind('/');
    return slash == std::string::npos ? std::string() : name.substr(0, slash);
}

// "a/b" + "../c" -> "a/c"; nullopt when ".." climbs above the root.
std::optional<std::string> join_relative(const std::string& dir, std::string_view target) {
    std::vector<std::string> parts;
    auto push = [&](std::string_view path) {
        while (!path.empty()) {
            auto slash = path.find('/');
            std::string_view part = path.substr(0, slash);
            path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
            if (part.empty() || part == ".") continue;
            if (part == "..") {
                if (parts.empty()) return false;
                parts.pop_back();
                continue;
            }
            parts.emplace_back(part);
        }
        return true;
    };
    if (!push(dir) || !push(target)) return std::nullopt;
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
    return out;
}

std::string blob_member(const Digest& d) {
    if (!d.is_sha256()) throw Error("unsupported digest algorithm in " + d.str(), "aishell stores sha256 blobs only");
    return "blobs/sha256/" + std::string(d.encoded());
}

// The digest a member's name claims ("blobs/sha256/<hex>", Docker's "<hex>.json"), if any.
std::optional<Digest> digest_in_name(const std::string& name) {
    std::string hex;
    if (name.starts_with("blobs/sha256/")) hex = name.substr(13);
    else if (name.ends_with(".json") && name.find('/') == std::string::npos) hex = name.substr(0, name.size() - 5);
    if (hex.size() != 64) return std::nullopt;
    return Digest::try_parse("sha256:" + hex);
}

Compression sniff_compression(int fd) {
    unsigned char magic[4] = {};
    ssize_t n = ::pread(fd, magic, sizeof magic, 0);
    if (n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) return Compression::Gzip;
    if (n == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) return Compression::Zstd;
    return Compression::None;
}

const char* compression_name(Compression c) {
    switch (c) {
        case Compression::None: return "uncompressed";
        case Compression::Gzip: return "gzip";
        case Compression::Zstd: return "zstd";
    }
    return "unknown";
}

// ---- the archive's members -------------------------------------------------------------------

// The members of an archive, as they streamed by: regular files spooled into tmp/ (removed when
// this goes, unless published), links and directories by name.
class Members {
public:
    struct File {
        BlobWriter writer;
        Digest digest;
        std::uint64_t size = 0;
    };

    void spool(Store& store, int fd, const std::function<void(int)>& before_read) {
        ScopedCtype ctype(ScopedCtype::Kind::Posix);  // names as bytes (archive_api.hpp)
        ArchiveReader a = new_reader();
        source_ = Source{fd, before_read, std::vector<char>(kReadBlock), nullptr};
        support_docker_tar(a.get());
        if (archive_read_open(a.get(), &source_, nullptr, read_source, nullptr) != ARCHIVE_OK) fail(a.get());
        for (;;) {
            archive_entry* entry = nullptr;
            int rc = archive_read_next_header(a.get(), &entry);
            if (rc == ARCHIVE_EOF) break;
            if (rc < ARCHIVE_WARN && source_.error) std::rethrow_exception(source_.error);
            if (rc < ARCHIVE_WARN)
                throw Error("read the archive: " + archive_message(a.get()),
                            "aishell load reads the tar files of docker save, podman save, skopeo and aishell save, "
                            "plain or gzip-compressed");
            if (++count_ > kMaxMembers) throw Error("the archive has more than " + std::to_string(kMaxMembers) + " members");
            const char* raw = archive_entry_pathname(entry);
            std::string name = raw ? raw : "";
            with_context("archive member '" + name + "'", [&] { add(store, a.get(), entry, clean_archive_name(name)); });
        }
        // Every link must lead to a member now, whether anything reads it or not.
        for (const auto* links : {&symlinks_, &hardlinks_})
            for (const auto& link : *links) {
                const std::string& name = link.first;  // clang 14 cannot capture a structured binding (P1091)
                with_context("archive member '" + name + "'", [&] { (void)file(name); });
            }
    }

    bool has(const std::string& name) const {
        return files_.count(name) || symlinks_.count(name) || hardlinks_.count(name);
    }

    // The regular member name leads to; throws when there is none.
    File& file(const std::string& name) {
        std::string real = resolve_archive_link(symlinks_, hardlinks_, name);
        auto it = files_.find(real);
        if (it == files_.end()) {
            if (real != name) throw Error("link '" + name + "' leads to '" + real + "', which the archive does not hold");
            throw Error("'" + name + "' is missing from the archive");
        }
        return it->second;
    }

    std::string read(const std::string& name, std::uint64_t max_size) {
        return with_context("archive member '" + name + "'", [&] { return file(name).writer.read_back(max_size); });
    }

private:
    // The archive's fd as libarchive reads it: before_read is asked before each read(2).
    struct Source {
        int fd = -1;
        std::function<void(int)> before_read;
        std::vector<char> buffer;
        std::exception_ptr error;  // what a read threw: it cannot cross libarchive's C frames
    };

    static la_ssize_t read_source(archive* a, void* data, const void** block) {
        auto* source = static_cast<Source*>(data);
        try {
            if (source->before_read) source->before_read(source->fd);
            for (;;) {
                ssize_t n = ::read(source->fd, source->buffer.data(), source->buffer.size());
                if (n >= 0) {
                    *block = source->buffer.data();
                    return n;
                }
                if (errno != EINTR) throw_errno("read");
            }
        } catch (...) {
            source->error = std::current_exception();
            archive_set_error(a, EIO, "read interrupted");
            return -1;
        }
    }

    [[noreturn]] void fail(archive* a) {
        if (source_.error) std::rethrow_exception(source_.error);
        throw Error("read the archive: " + archive_message(a));
    }

    void add(Store& store, archive* a, archive_entry* entry, std::string name) {
        const bool is_dir = archive_entry_filetype(entry) == AE_IFDIR && !archive_entry_hardlink(entry);
        if (is_dir) {  // a directory may come twice (tar -r); a directory and a file may not
            if (!name.empty() && names_.count(name)) throw Error("the archive holds this member twice");
            dirs_.insert(name);
            return;
        }
        if (name.empty() || dirs_.count(name) || !names_.insert(name).second)
            throw Error("the archive holds this member twice");
        if (const char* target = archive_entry_hardlink(entry)) {
            hardlinks_[name] = clean_archive_name(target);
            return;
        }
        switch (archive_entry_filetype(entry)) {
            case AE_IFLNK: {
                const char* target = archive_entry_symlink(entry);
                symlinks_[name] = target ? target : "";
                return;
            }
            case AE_IFREG: break;
            default: throw Error("not a regular file, directory or link");
        }
        if (is_legacy_v1_member(name)) {
            ignored_.insert(name);
            return;
        }
        File f{store.begin_blob(), Digest(), 0};
        std::optional<std::uint64_t> limit = member_size_limit(name);
        auto over_limit = [&](std::uint64_t size) {
            return Error("it is " + std::to_string(size) + " bytes, over the limit of " + std::to_string(*limit) +
                         " for this file");
        };
        if (limit && archive_entry_size(entry) > static_cast<la_int64_t>(*limit)) throw over_limit(archive_entry_size(entry));
        for (;;) {
            const void* buf = nullptr;
            size_t size = 0;
            la_int64_t offset = 0;
            int rc = archive_read_data_block(a, &buf, &size, &offset);
            if (rc == ARCHIVE_EOF) break;
            if (rc < ARCHIVE_WARN) fail(a);
            // Sparse members (GNU tar) come with holes: a layer or a blob never is one.
            if (static_cast<std::uint64_t>(offset) != f.writer.size()) throw Error("sparse members are not supported");
            f.writer.write(buf, size);
            if (limit && f.writer.size() > *limit) throw over_limit(f.writer.size());
        }
        f.size = f.writer.size();
        f.digest = f.writer.finish_computed();
        files_.emplace(std::move(name), std::move(f));
    }

    Source source_;
    std::map<std::string, File> files_;
    std::map<std::string, std::string> symlinks_, hardlinks_;
    std::set<std::string> names_;    // every member but directories, for duplicates
    std::set<std::string> dirs_;
    std::set<std::string> ignored_;  // legacy v1 members, not spooled
    std::size_t count_ = 0;
};

// ---- layers ----------------------------------------------------------------------------------

// One pass over a layer member: libarchive's filters decompress it (an outer reader in its raw
// format), every decompressed byte is hashed (the diff_id) and handed to `out` when there is one,
// and an inner reader parses those same bytes as a tar, so a member that is not a layer is
// refused here rather than on the first run.
class LayerScan {
public:
    LayerScan(int fd, LayerCompressor* out) : out_(out) {
        outer_ = new_reader();
        archive_read_support_filter_gzip(outer_.get());
        archive_read_support_filter_zstd(outer_.get());
        archive_read_support_format_raw(outer_.get());
        archive_entry* entry = nullptr;
        if (archive_read_open_fd(outer_.get(), fd, kReadBlock) != ARCHIVE_OK ||
            archive_read_next_header(outer_.get(), &entry) < ARCHIVE_WARN)
            throw Error("not a tar archive: " + archive_message(outer_.get()));
    }

    Digest run() {
        ArchiveReader inner = new_reader();
        archive_read_support_format_tar(inner.get());
        archive_read_support_format_gnutar(inner.get());
        archive_read_support_format_empty(inner.get());
        if (archive_read_open(inner.get(), this, nullptr, &LayerScan::feed, nullptr) != ARCHIVE_OK) fail(inner.get());
        for (;;) {
            archive_entry* entry = nullptr;
            int rc = archive_read_next_header(inner.get(), &entry);
            if (rc == ARCHIVE_EOF) break;
            if (rc < ARCHIVE_WARN) fail(inner.get());
            const void* buf = nullptr;
            size_t size = 0;
            la_int64_t offset = 0;
            while ((rc = archive_read_data_block(inner.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
            }
            if (rc < ARCHIVE_WARN) fail(inner.get());
        }
        // What follows the tar's end (its zero blocks, the record padding) is part of the layer.
        while (next_block() > 0) {
        }
        if (error_) std::rethrow_exception(error_);
        return diff_.finish();
    }

private:
    static la_ssize_t feed(archive*, void* self, const void** buffer) {
        auto* scan = static_cast<LayerScan*>(self);
        try {
            la_ssize_t n = scan->next_block();
            *buffer = scan->block_;
            return n;
        } catch (...) {
            scan->error_ = std::current_exception();  // cannot cross libarchive's C frames
            return -1;
        }
    }

    la_ssize_t next_block() {
        size_t size = 0;
        la_int64_t offset = 0;
        int rc = archive_read_data_block(outer_.get(), &block_, &size, &offset);
        if (rc == ARCHIVE_EOF) return 0;
        if (rc < ARCHIVE_WARN) throw Error("decompress: " + archive_message(outer_.get()));
        diff_.update(block_, size);
        if (out_) out_->write(block_, size);
        return static_cast<la_ssize_t>(size);
    }

    [[noreturn]] void fail(archive* inner) {
        if (error_) std::rethrow_exception(error_);
        throw Error("not a tar archive: " + archive_message(inner));
    }

    ArchiveReader outer_;
    LayerCompressor* out_;
    Sha256 diff_;
    const void* block_ = nullptr;
    std::exception_ptr error_;
};

// ---- the load --------------------------------------------------------------------------------

class Loader {
public:
    Loader(Store& store, const ArchiveLoadOptions& options) : store_(store), options_(options) {}

    std::vector<LoadedImage> run(int fd) {
        members_.spool(store_, fd, options_.before_read);
        read_repo_tags();
        if (members_.has("index.json")) load_oci_side();
        else if (members_.has("manifest.json")) load_docker_side();
        else
            throw Error("the archive holds neither index.json nor manifest.json: not an image archive",
                        "aishell load reads the tar files of docker save, podman save, skopeo and aishell save");
        name_images();
        commit();
        return images_;
    }

private:
    struct Planned {
        Descriptor descriptor;
        std::vector<Digest> configs;  // of its image manifests, for RepoTags
        std::vector<std::string> names;
    };

    // RepoTags by config digest, when there is a manifest.json.
    void read_repo_tags() {
        if (!members_.has("manifest.json")) return;
        docker_images_ = parse_docker_archive_manifest(members_.read("manifest.json", kMaxDockerArchiveJsonSize));
        for (const auto& image : docker_images_) {
            Members::File& config = with_context("manifest.json: config '" + image.config + "'",
                                                 [&]() -> Members::File& { return members_.file(image.config); });
            auto& tags = repo_tags_[config.digest];
            tags.insert(tags.end(), image.repo_tags.begin(), image.repo_tags.end());
        }
    }

    // ---- OCI side

    void load_oci_side() {
        Index index = with_context("index.json", [&] {
            return parse_index(members_.read("index.json", kMaxDockerArchiveJsonSize), ManifestKind::OciIndex);
        });
        for (const auto& d : index.manifests) {
            Planned image;
            image.descriptor = d;
            with_context("image " + d.digest.short_form(), [&] { collect(d, 1, image.configs); });
            for (auto key : {kContainerdNameAnnotation, kRefNameAnnotation}) {
                auto it = d.annotations.find(std::string(key));
                if (it != d.annotations.end() && !it->second.empty()) {
                    image.names.push_back(it->second);
                    break;
                }
            }
            image.descriptor.annotations.clear();
            image.descriptor.platform.reset();
            add_planned(std::move(image));
        }
    }

    // Verifies d and what it references (an index: the manifests the archive holds; a manifest:
    // its config and layers) and queues them for the commit.
    void collect(const Descriptor& d, int depth, std::vector<Digest>& configs) {
        if (depth > kMaxIndexDepth) throw Error("indexes nested deeper than " + std::to_string(kMaxIndexDepth) + " levels");
        std::string bytes = verified(d).writer.read_back(kMaxManifestSize);
        ManifestKind kind = detect_manifest_kind(d.media_type, bytes);
        if (is_index_kind(kind)) {
            Index index = parse_index(bytes, kind);
            std::size_t images = configs.size();
            for (const auto& child : index.manifests) {
                // An index names every platform; `docker save` of one platform holds only its own.
                if (!members_.has(blob_member(child.digest))) continue;
                if (child.media_type == mt::kOciIndex || child.media_type == mt::kDockerList ||
                    child.media_type == mt::kOciManifest || child.media_type == mt::kDockerManifest)
                    with_context("manifest " + child.digest.short_form(), [&] { collect(child, depth + 1, configs); });
                else
                    verified(child);  // an attestation or other artifact: kept as it is
            }
            if (configs.size() == images) throw Error("the index names no image manifest that the archive holds");
            return;
        }
        Manifest manifest = parse_manifest(bytes, kind);
        std::string config_bytes = with_context("config " + manifest.config.digest.short_form(), [&] {
            return verified(manifest.config).writer.read_back(kMaxConfigSize);
        });
        ImageConfig config = parse_image_config(manifest, config_bytes);
        std::vector<Digest> diff_ids = config.diff_ids();
        for (std::size_t i = 0; i < manifest.layers.size(); ++i) {
            const Descriptor& layer = manifest.layers[i];
            with_context("layer " + layer.digest.short_form(), [&] {
                Members::File& file = verified(layer);
                if (!scanned_.insert(layer.digest).second) return;
                UniqueFd fd = file.writer.reopen();
                Compression declared = layer_compression(layer.media_type);
                Compression actual = sniff_compression(fd.get());
                if (actual != declared)
                    throw Error(std::string("the layer is ") + compression_name(actual) + ", its media type says " +
                                compression_name(declared));
                check_diff_id(LayerScan(fd.get(), nullptr).run(), diff_ids[i]);
            });
        }
        configs.push_back(manifest.config.digest);
    }

    // The member holding d's bytes, checked against d's digest and size, queued for the commit.
    Members::File& verified(const Descriptor& d) {
        std::string name = blob_member(d.digest);
        if (!members_.has(name)) throw Error("blob " + d.digest.str() + " is missing from the archive");
        Members::File& file = members_.file(name);
        if (file.digest != d.digest)
            throw Error("blob " + d.digest.str() + " does not match its digest: its bytes hash to " + file.digest.str());
        if (d.size >= 0 && file.size != static_cast<std::uint64_t>(d.size))
            throw Error("blob " + d.digest.str() + " is " + std::to_string(file.size) + " bytes, its descriptor says " +
                        std::to_string(d.size));
        publish_.emplace(d.digest, &file.writer);
        return file;
    }

    static void check_diff_id(const Digest& actual, const Digest& expected) {
        if (actual != expected)
            throw Error("diff_id mismatch: the config says " + expected.str() + ", the tar is " + actual.str());
    }

    // ---- Docker side

    void load_docker_side() {
        std::map<std::string, std::vector<std::string>> repositories;
        if (members_.has("repositories"))
            repositories = parse_docker_repositories(members_.read("repositories", kMaxDockerArchiveJsonSize));
        for (std::size_t i = 0; i < docker_images_.size(); ++i) {
            const DockerArchiveImage& image = docker_images_[i];
            with_context("manifest.json: image " + std::to_string(i + 1), [&] {
                Planned planned = docker_image(image);
                planned.names = image.repo_tags;
                // Docker before 1.10 named images only in repositories, by their top layer's v1 id.
                if (planned.names.empty() && !image.layers.empty()) {
                    auto it = repositories.find(parent_of(image.layers.back()));
                    if (it != repositories.end()) planned.names = it->second;
                }
                add_planned(std::move(planned));
            });
        }
    }

    Planned docker_image(const DockerArchiveImage& image) {
        Manifest manifest;
        manifest.media_type = std::string(mt::kOciManifest);
        Members::File& config_file = named_file(image.config, "config");
        std::string config_bytes = config_file.writer.read_back(kMaxConfigSize);
        manifest.config = {std::string(mt::kOciConfig), config_file.digest, static_cast<std::int64_t>(config_file.size)};
        publish_.emplace(config_file.digest, &config_file.writer);
        ImageConfig config = with_context("config '" + image.config + "'", [&] { return ImageConfig::parse(config_bytes); });
        std::vector<Digest> diff_ids = config.diff_ids();
        if (diff_ids.size() != image.layers.size())
            throw Error("the config has " + std::to_string(diff_ids.size()) + " diff_ids but manifest.json lists " +
                        std::to_string(image.layers.size()) + " layers");
        for (std::size_t i = 0; i < image.layers.size(); ++i)
            manifest.layers.push_back(
                with_context("layer '" + image.layers[i] + "'", [&] { return docker_layer(image.layers[i], diff_ids[i]); }));
        std::string bytes = manifest_to_json(manifest);
        Digest digest = sha256_of(bytes);
        documents_.emplace(digest, bytes);
        return Planned{{std::string(mt::kOciManifest), digest, static_cast<std::int64_t>(bytes.size())}, {config_file.digest}, {}};
    }

    // The member at path, checked against the digest its name claims.
    Members::File& named_file(const std::string& path, std::string_view what) {
        return with_context(std::string(what) + " '" + path + "'", [&]() -> Members::File& {
            Members::File& file = members_.file(path);
            if (auto claimed = digest_in_name(path); claimed && *claimed != file.digest)
                throw Error("its name says " + claimed->str() + " but its bytes hash to " + file.digest.str());
            return file;
        });
    }

    // A layer of the Docker side: a plain tar is compressed into a new blob; a compressed one is
    // kept as it is. Either way its diff_id is checked against the config's.
    Descriptor docker_layer(const std::string& path, const Digest& diff_id) {
        Members::File& file = named_file(path, "layer");
        if (auto done = converted_.find(&file); done != converted_.end()) {
            check_diff_id(done->second.second, diff_id);
            return done->second.first;
        }
        UniqueFd fd = file.writer.reopen();
        Compression compression = sniff_compression(fd.get());
        Descriptor layer;
        Digest actual;
        if (compression != Compression::None) {
            actual = LayerScan(fd.get(), nullptr).run();
            layer = {std::string(compression == Compression::Gzip ? mt::kOciLayerGzip : mt::kOciLayerZstd), file.digest,
                     static_cast<std::int64_t>(file.size)};
            publish_.emplace(file.digest, &file.writer);
        } else {
            BlobWriter& blob = made_.emplace_back(store_.begin_blob());
            std::unique_ptr<LayerCompressor> compressor = make_layer_compressor(blob, options_.compression);
            actual = LayerScan(fd.get(), compressor.get()).run();
            compressor->finish();
            Digest digest = blob.finish_computed();
            layer = {std::string(layer_media_type(options_.compression)), digest, static_cast<std::int64_t>(blob.size())};
            publish_.emplace(digest, &blob);
        }
        check_diff_id(actual, diff_id);
        converted_.emplace(&file, std::make_pair(layer, actual));
        return layer;
    }

    // ---- names and commit

    // One entry per manifest: an archive may list the same image twice under two names.
    void add_planned(Planned image) {
        for (auto& p : planned_)
            if (p.descriptor.digest == image.descriptor.digest) {
                p.names.insert(p.names.end(), image.names.begin(), image.names.end());
                return;
            }
        planned_.push_back(std::move(image));
    }

    void name_images() {
        if (planned_.empty()) throw Error("the archive holds no image");
        if (options_.name && planned_.size() != 1)
            throw Error("--name names one image, and the archive holds " + std::to_string(planned_.size()),
                        "load it without --name, then tag what you need");
        std::map<std::string, Digest> owner;
        for (auto& image : planned_) {
            std::vector<std::string> names;
            if (options_.name) names = {*options_.name};
            for (const auto& config : image.configs) {
                if (options_.name) break;
                auto it = repo_tags_.find(config);
                if (it != repo_tags_.end()) names.insert(names.end(), it->second.begin(), it->second.end());
            }
            if (names.empty()) names = image.names;
            if (names.empty())
                throw Error("image " + image.descriptor.digest.short_form() + " in the archive has no name",
                            planned_.size() == 1 ? "name it with --name NAME" : "save it again with a name");
            image.names.clear();
            for (auto& name : names) {
                if (std::find(image.names.begin(), image.names.end(), name) != image.names.end()) continue;
                if (options_.check_name) options_.check_name(name);
                auto [it, fresh] = owner.emplace(name, image.descriptor.digest);
                if (!fresh) throw Error("two images in the archive are named " + name);
                image.names.push_back(name);
            }
            images_.push_back({image.names, image.descriptor});
        }
    }

    // As a pull commits: under the store lock, every blob published, then every name tagged. A
    // failure takes back the names (restored as they were) and the blobs this load made.
    void commit() {
        std::shared_ptr<Lease> lease = Lease::create(store_, "load");
        Store leased = store_.with_lease(lease);
        StoreLock lock = leased.lock_exclusive();
        std::vector<std::pair<std::string, std::optional<Descriptor>>> previous;
        try {
            for (auto& [digest, writer] : publish_) {
                lease->add({LeaseEntry::blob(digest)});  // lease, then look (lease.hpp)
                if (!leased.has_blob(digest)) writer->publish();
            }
            for (const auto& [digest, bytes] : documents_) leased.put_blob(bytes);
            for (const auto& image : images_)
                for (const auto& name : image.names) {
                    auto old = leased.find_image(name);
                    previous.emplace_back(name, old ? std::optional(old->descriptor) : std::nullopt);
                    leased.tag_image(name, image.descriptor);
                }
        } catch (...) {
            rollback(leased, *lease, previous);
            throw;
        }
    }

    static void rollback(Store& store, const Lease& lease,
                         const std::vector<std::pair<std::string, std::optional<Descriptor>>>& previous) noexcept {
        try {
            for (auto it = previous.rbegin(); it != previous.rend(); ++it) {
                if (it->second) store.tag_image(it->first, *it->second);
                else store.untag_image(it->first);
            }
            GcOptions gc;
            gc.only_blobs.emplace();
            for (const auto& e : lease.entries())
                if (e.made && e.kind == LeaseKind::Blob) gc.only_blobs->push_back(Digest::parse(e.name));
            gc.own_lease = lease.path();
            if (!gc.only_blobs->empty()) collect_garbage(store, gc);
        } catch (...) {
            // The error that started the rollback is the one to report; what is left is
            // unreferenced and goes with the next garbage collection.
        }
    }

    Store& store_;
    const ArchiveLoadOptions& options_;
    Members members_;
    std::vector<DockerArchiveImage> docker_images_;
    std::map<Digest, std::vector<std::string>> repo_tags_;
    std::vector<Planned> planned_;
    std::vector<LoadedImage> images_;
    std::map<Digest, BlobWriter*> publish_;  // spooled members and made layers, by digest
    std::map<Digest, std::string> documents_;  // manifests made for the Docker side
    std::list<BlobWriter> made_;             // compressed layers (a list: publish_ points into it)
    std::set<Digest> scanned_;
    std::map<const Members::File*, std::pair<Descriptor, Digest>> converted_;
};

}  // namespace

std::string clean_archive_name(std::string_view name) {
    if (name.starts_with('/')) throw Error("absolute member names are not allowed in an image archive");
    std::string out;
    while (!name.empty()) {
        auto slash = name.find('/');
        std::string_view part = name.substr(0, slash);
        name = slash == std::string_view::npos ? std::string_view() : name.substr(slash + 1);
        if (part.empty() || part == ".") continue;
        if (part == "..") throw Error("member names with \"..\" are not allowed in an image archive");
        out += (out.empty() ? "" : "/") + std::string(part);
    }
    return out;
}

std::string resolve_archive_link(const std::map<std::string, std::string>& symlinks,
                                 const std::map<std::string, std::string>& hardlinks, std::string name) {
    const std::string start = name;
    for (int hops = 0; hops <= kMaxLinkHops; ++hops) {
        if (auto hard = hardlinks.find(name); hard != hardlinks.end()) {
            name = hard->second;
            continue;
        }
        auto sym = symlinks.find(name);
        if (sym == symlinks.end()) return name;
        const std::string& target = sym->second;
        std::optional<std::string> next;
        if (!target.starts_with('/')) next = join_relative(parent_of(name), target);
        if (!next || next->empty())
            throw Error("symlink '" + name + "' -> '" + target + "' points out of the archive");
        name = *next;
    }
    throw Error("symlink '" + start + "': more than " + std::to_string(kMaxLinkHops) + " links (a loop)");
}

std::vector<LoadedImage> load_image_archive(Store& store, int fd, const ArchiveLoadOptions& options) {
    return Loader(store, options).run(fd);
}

}  // namespace aishell::oci
