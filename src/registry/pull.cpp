// pull_image: resolve, download in parallel, verify, then commit and name under the lock.
#include "registry/pull.hpp"

#include <algorithm>
#include <mutex>
#include <set>
#include <thread>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/blob_sources.hpp"
#include "oci/image.hpp"
#include "registry/auth.hpp"
#include "registry/workers.hpp"

namespace aishell::registry {

namespace {

// Docker schema 1 is deliberately not offered: a registry that only has schema 1 then sends
// it anyway and we refuse it with a clear message.
constexpr const char* kManifestAccept =
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

struct FetchedManifest {
    std::string bytes;
    oci::Digest digest;  // computed over the bytes received
    oci::ManifestKind kind = oci::ManifestKind::Unknown;
};

FetchedManifest fetch_manifest(RegistryClient& client, Transport& transport, const std::string& repository,
                               const std::string& reference, const std::optional<oci::Digest>& expected,
                               std::int64_t expected_size = -1) {
    return with_context("fetch manifest " + repository + (reference.starts_with("sha256:") ? "@" : ":") + reference, [&] {
        Request request;
        request.url = "/v2/" + repository + "/manifests/" + reference;
        request.headers = {{"Accept", kManifestAccept}};
        request.max_body = oci::kMaxManifestSize;
        Response response = client.send(transport, request);
        if (response.status != 200) throw Error(describe_http_error(response));
        FetchedManifest m;
        m.bytes = std::move(response.body);
        m.digest = oci::sha256_of(m.bytes);
        if (expected && m.digest != *expected)
            throw Error("digest mismatch: expected " + expected->str() + ", got " + m.digest.str());
        if (expected_size >= 0 && m.bytes.size() != static_cast<std::uint64_t>(expected_size))
            throw Error("size mismatch: the index says " + std::to_string(expected_size) + " bytes, got " +
                        std::to_string(m.bytes.size()));
        m.kind = oci::detect_manifest_kind(response.header("content-type").value_or(""), m.bytes);
        if (m.kind == oci::ManifestKind::DockerSchema1)
            throw Error("Docker schema 1 manifests are unsupported",
                        "push the image again with a current docker, podman or skopeo (they write schema 2)");
        if (m.kind == oci::ManifestKind::Unknown)
            throw Error("unsupported manifest (Content-Type \"" + response.header("content-type").value_or("") + "\")");
        return m;
    });
}

bool is_attestation(const oci::Descriptor& d) {
    auto it = d.annotations.find("vnd.docker.reference.type");
    return it != d.annotations.end() && it->second == "attestation-manifest";
}

// Parses "bytes START-END/TOTAL" and returns START.
std::optional<std::uint64_t> content_range_start(std::string_view value) {
    if (!value.starts_with("bytes ")) return std::nullopt;
    value.remove_prefix(6);
    auto dash = value.find('-');
    if (dash == 0 || dash == std::string_view::npos) return std::nullopt;
    std::uint64_t start = 0;
    for (char c : value.substr(0, dash)) {
        if (c < '0' || c > '9') return std::nullopt;
        start = start * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return start;
}

// The state of one pull attempt against one endpoint.
class Puller {
public:
    Puller(oci::Store& store, const Reference& ref, const PullOptions& options, Endpoint endpoint,
           std::string credential_key)
        : store_(store), ref_(ref), options_(options) {
        auto cancelled = [this] { return cancelled_now(); };
        factory_ = options.transports ? options.transports
                                      : curl_transport_factory(TlsOptions{options.tls_verify, default_certs_dir()}, cancelled);
        ClientOptions client_options;
        client_options.tls_verify = options.tls_verify;
        client_options.retry = options.retry;
        client_options.debug = options.debug;
        client_options.cancelled = cancelled;
        client_ = std::make_unique<RegistryClient>(std::move(endpoint), credential_key, ref.path,
                                                   find_credentials(credential_key), std::move(client_options));
    }

    PullResult run() {
        auto transport = factory_();
        client_->ping(*transport);
        PullResult result;
        result.name = ref_.str();
        FetchedManifest image = fetch_manifest(*client_, *transport, ref_.path, ref_.manifest_ref(), ref_.digest);
        if (oci::is_index_kind(image.kind)) {
            oci::Index index = with_context("index " + image.digest.short_form(), [&] { return oci::parse_index(image.bytes, image.kind); });
            oci::Platform wanted = options_.platform.value_or(oci::Platform::host());
            oci::Descriptor chosen = select_platform_manifest(index, wanted);
            result.index_digest = image.digest;
            image = fetch_manifest(*client_, *transport, ref_.path, chosen.digest.str(), chosen.digest, chosen.size);
            if (oci::is_index_kind(image.kind))
                throw Error("manifest " + chosen.digest.short_form() + " chosen from the index is itself an index (unsupported)");
        }
        oci::Manifest manifest = with_context("manifest " + image.digest.short_form(),
                                              [&] { return oci::parse_manifest(image.bytes, image.kind); });
        result.manifest.media_type = std::string(oci::media_type_of(image.kind));
        result.manifest.digest = image.digest;
        result.manifest.size = static_cast<std::int64_t>(image.bytes.size());

        std::vector<oci::Descriptor> blobs = manifest_blobs(manifest);
        if (options_.observer) options_.observer->on_manifest(ref_, result.manifest, blobs.size());
        std::vector<std::optional<oci::BlobWriter>> writers = download(blobs, std::move(transport));
        if (options_.cancel && options_.cancel->load()) throw Error("interrupted");
        check_config(manifest, writers.front());
        commit(blobs, writers, image, result);
        result.downloaded_bytes = downloaded_.load();
        return result;
    }

private:
    bool cancelled_now() const { return failed_.load() || (options_.cancel && options_.cancel->load()); }

    std::vector<std::optional<oci::BlobWriter>> download(const std::vector<oci::Descriptor>& blobs,
                                                         std::unique_ptr<Transport> first) {
        std::vector<std::optional<oci::BlobWriter>> writers(blobs.size());
        run_workers(blobs.size(), options_.parallel, factory_, std::move(first), failed_,
                    [this] { return cancelled_now(); },
                    [&](Transport& transport, std::size_t i) { download_one(transport, blobs[i], writers[i]); });
        return writers;
    }

    // Downloads one blob (resuming a partial an earlier pull left) and verifies it.
    void download_one(Transport& transport, const oci::Descriptor& blob, std::optional<oci::BlobWriter>& writer) {
        if (store_.has_blob(blob.digest)) {
            if (options_.observer) options_.observer->on_blob_skipped(blob);
            return;
        }
        with_context("fetch blob " + blob.digest.short_form(), [&] {
            writer = store_.begin_blob(blob.digest);
            std::uint64_t resumed = writer->size();
            if (options_.observer) options_.observer->on_blob_started(blob, resumed);
            fetch_and_finish(transport, blob, writer, resumed);
            if (options_.observer) options_.observer->on_blob_done(blob);
        });
    }

    void fetch_and_finish(Transport& transport, const oci::Descriptor& blob, std::optional<oci::BlobWriter>& writer,
                          std::uint64_t resumed) {
        auto fetch = [&](std::uint64_t last) {
            fetch_blob(*client_, transport, store_, ref_.path, blob, writer, [&](std::uint64_t bytes) {
                if (bytes > last) downloaded_ += bytes - last;
                last = bytes;
                if (options_.observer) options_.observer->on_blob_progress(blob, bytes);
            });
        };
        fetch(resumed);
        try {
            writer->finish(blob.digest, blob.size);
        } catch (const Error& e) {
            if (resumed == 0) throw;
            // The prefix came from an earlier pull that was interrupted: from another
            // registry or mirror, or a registry that served other bytes then. finish() has
            // discarded it; what this registry serves is fetched once more from byte 0, so a
            // bad partial costs a download, not a failed pull.
            if (options_.observer)
                options_.observer->on_message("blob " + blob.digest.short_form() + ": the download resumed from byte " +
                                              std::to_string(resumed) + " did not verify (" + e.message() +
                                              "); downloading it again from the start");
            writer = store_.begin_blob(blob.digest);
            fetch(0);
            writer->finish(blob.digest, blob.size);
        }
    }

    // Everything aishell reads from an image later (load_image) must hold before the pull
    // commits: a config it cannot parse would otherwise sit in the store, named, and fail
    // every command that lists or uses the store's images.
    void check_config(const oci::Manifest& manifest, const std::optional<oci::BlobWriter>& writer) {
        with_context("config " + manifest.config.digest.short_form(), [&] {
            std::string bytes = writer ? writer->read_back(oci::kMaxConfigSize)
                                       : store_.read_blob(manifest.config.digest, oci::kMaxConfigSize);
            (void)oci::parse_image_config(manifest, bytes);
        });
    }

    // Makes everything visible at once, under the store lock. On failure, removes the blobs
    // this pull added so index.json and blobs/ are exactly as before.
    void commit(const std::vector<oci::Descriptor>& blobs, std::vector<std::optional<oci::BlobWriter>>& writers,
                const FetchedManifest& image, const PullResult& result) {
        oci::StoreLock lock = store_.lock_exclusive();
        std::vector<oci::Digest> added;
        try {
            for (std::size_t i = 0; i < blobs.size(); ++i) {
                const auto& d = blobs[i];
                if (!writers[i]) {
                    if (!store_.has_blob(d.digest))
                        throw Error("blob " + d.digest.short_form() + " vanished from the store during the pull",
                                    "another aishell removed it (garbage collection?); pull again");
                    continue;
                }
                if (store_.has_blob(d.digest)) {  // another process committed it meanwhile
                    writers[i]->discard();
                    continue;
                }
                writers[i]->publish();  // verified by download_one
                added.push_back(d.digest);
            }
            if (!store_.has_blob(image.digest)) {
                store_.put_blob(image.bytes);
                added.push_back(image.digest);
            }
            store_.tag_image(result.name, result.manifest);
        } catch (...) {
            for (const auto& d : added) {
                std::error_code ec;
                std::filesystem::remove(store_.blob_path(d), ec);
            }
            throw;
        }
        record_sources(blobs);
    }

    // Notes where each blob came from, for a later push to the same registry to mount instead
    // of upload (oci/blob_sources.hpp). The pull is complete by now and the record only an
    // optimisation: a failure to write it is said under --debug and otherwise costs an upload.
    void record_sources(const std::vector<oci::Descriptor>& blobs) {
        for (const auto& d : blobs) {
            try {
                oci::record_blob_source(store_, d.digest, {ref_.domain, ref_.path});
            } catch (const Error& e) {
                if (options_.debug) options_.debug("not recorded as a blob source: " + e.message());
            }
        }
    }

    oci::Store& store_;
    const Reference& ref_;
    const PullOptions& options_;
    TransportFactory factory_;
    std::unique_ptr<RegistryClient> client_;
    std::atomic<bool> failed_{false};
    std::atomic<std::uint64_t> downloaded_{0};
};

}  // namespace

std::vector<oci::Descriptor> manifest_blobs(const oci::Manifest& manifest) {
    std::vector<oci::Descriptor> blobs{manifest.config};
    std::set<oci::Digest> seen{manifest.config.digest};
    for (const auto& layer : manifest.layers)
        if (seen.insert(layer.digest).second) blobs.push_back(layer);
    return blobs;
}

oci::Descriptor select_platform_manifest(const oci::Index& index, const oci::Platform& wanted) {
    const oci::Descriptor* chosen = nullptr;
    int best = -1;
    std::vector<std::string> available;
    for (const auto& d : index.manifests) {
        // Other media types (nested indexes, artifacts) and Docker Hub's attestation entries
        // (platform unknown/unknown) are not images to run: pass over them.
        if (d.media_type != oci::media_type::kOciManifest && d.media_type != oci::media_type::kDockerManifest) continue;
        if (!d.platform || d.platform->os == "unknown" || d.platform->architecture == "unknown" || is_attestation(d))
            continue;
        available.push_back(d.platform->str());
        int score = oci::platform_match_score(wanted, *d.platform);
        if (score > best) {
            best = score;
            chosen = &d;
        }
    }
    if (!chosen) {
        std::string list;
        for (const auto& p : available) list += (list.empty() ? "" : ", ") + p;
        throw Error("no image for platform " + wanted.str() + " in the index (it has: " + (list.empty() ? "none" : list) + ")",
                    "choose one with --platform OS/ARCH[/VARIANT]");
    }
    return *chosen;
}

void fetch_blob(RegistryClient& client, Transport& transport, oci::Store& store, const std::string& repository,
                const oci::Descriptor& blob, std::optional<oci::BlobWriter>& writer,
                const std::function<void(std::uint64_t)>& progress) {
    const auto expected = static_cast<std::uint64_t>(blob.size);
    if (writer->size() > expected) {  // a partial longer than the blob: useless
        writer->discard();
        writer = store.begin_blob(blob.digest);
    }
    bool restarted_after_416 = false;
    for (;;) {
        if (writer->size() == expected) return;  // complete (maybe from an earlier run); commit verifies
        Request request;
        request.url = "/v2/" + repository + "/blobs/" + blob.digest.str();
        request.on_head = [&](const Response& head) {
            std::uint64_t have = writer->size();
            if (head.status == 206) {
                auto start = content_range_start(head.header("content-range").value_or(""));
                if (!start || *start != have)
                    throw Error("the registry answered a Range request from byte " + std::to_string(have) +
                                " with Content-Range \"" + head.header("content-range").value_or("") + "\"");
            } else if (have > 0) {
                // The server ignored Range and sends the whole blob: start again from zero.
                writer->discard();
                writer = store.begin_blob(blob.digest);
            }
        };
        request.sink = [&](std::string_view chunk) {
            if (writer->size() + chunk.size() > expected)
                throw Error("the registry sent more than the " + std::to_string(expected) + " bytes the manifest says");
            writer->write(chunk);
        };
        request.on_progress = [&](std::uint64_t) {
            if (progress) progress(writer->size());
        };
        auto prepare = [&](Request& attempt) {
            std::erase_if(attempt.headers, [](const auto& h) { return h.first == "Range"; });
            if (writer->size() > 0) attempt.headers.emplace_back("Range", "bytes=" + std::to_string(writer->size()) + "-");
        };
        Response response = client.send(transport, request, prepare);
        if (response.status == 416 && !restarted_after_416) {
            restarted_after_416 = true;  // the partial does not fit this blob: start over once
            writer->discard();
            writer = store.begin_blob(blob.digest);
            continue;
        }
        if (response.status != 200 && response.status != 206) throw Error(describe_http_error(response));
        if (writer->size() != expected)
            throw Error("transfer ended after " + std::to_string(writer->size()) + " of " + std::to_string(expected) +
                        " bytes");
        return;
    }
}

PullResult pull_image(oci::Store& store, const Reference& ref, const PullOptions& options) {
    return with_context("pull " + ref.str(), [&] {
        std::optional<std::string> mirror = options.mirror;
        if (!mirror) mirror = get_env("AISHELL_REGISTRY_MIRROR");
        if (mirror && !mirror->empty() && ref.is_docker_hub()) {
            Endpoint endpoint = Endpoint::parse(*mirror);
            try {
                return Puller(store, ref, options, endpoint, endpoint.authority).run();
            } catch (const Error& e) {
                if (options.cancel && options.cancel->load()) throw;
                // A mirror is a cache: when it fails, the origin is the source of truth.
                if (options.observer)
                    options.observer->on_message("mirror " + endpoint.authority + " failed (" + e.message() +
                                                 "); trying " + ref.api_host());
            }
        }
        return Puller(store, ref, options, Endpoint{ref.api_host(), std::nullopt}, ref.domain).run();
    });
}

}  // namespace aishell::registry
