// push_image: HEAD, mount or upload every blob in parallel, then PUT the manifest.
#include "registry/push.hpp"

#include <algorithm>
#include <set>

#include "common/error.hpp"
#include "oci/lease.hpp"
#include "oci/types.hpp"
#include "registry/auth.hpp"
#include "registry/workers.hpp"

namespace aishell::registry {

UploadMethod choose_upload_method(std::uint64_t size, std::uint64_t chunk_size) {
    if (chunk_size > 0 && size > chunk_size) return UploadMethod::Chunked;
    return size <= kMonolithicUploadMax ? UploadMethod::Monolithic : UploadMethod::Streamed;
}

std::string upload_location(std::string_view answered_url, std::optional<std::string_view> location) {
    if (!location || location->empty())
        throw Error("the registry started an upload without saying where to send it (no Location header)");
    return resolve_url(answered_url, *location);
}

std::string add_query(std::string_view url, std::string_view key, std::string_view value) {
    std::string out(url.substr(0, url.find('#')));
    auto q = out.find('?');
    if (q == std::string::npos) out += '?';
    else if (q + 1 != out.size() && out.back() != '&') out += '&';
    out += std::string(key) + "=" + url_encode(value);
    return out;
}

std::string chunk_content_range(std::uint64_t offset, std::uint64_t length) {
    return std::to_string(offset) + "-" + std::to_string(offset + length - 1);
}

std::optional<std::uint64_t> parse_upload_range(std::string_view value) {
    if (value.starts_with("bytes=")) value.remove_prefix(6);  // some registries add the unit
    if (!value.starts_with("0-") || value.size() == 2 || value.size() > 22) return std::nullopt;
    std::uint64_t last = 0;
    for (char c : value.substr(2)) {
        if (c < '0' || c > '9') return std::nullopt;
        last = last * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return last;
}

std::optional<std::string> choose_mount_source(const std::vector<oci::BlobSource>& sources,
                                               std::string_view registry, std::string_view repository) {
    for (auto it = sources.rbegin(); it != sources.rend(); ++it)
        if (it->registry == registry && it->repository != repository) return it->repository;
    return std::nullopt;
}

namespace {

constexpr const char* kOctetStream = "application/octet-stream";

bool is_retryable(int status) { return status == 429 || status >= 500; }

// An upload request's answer that a new upload session may get past (a 5xx, a 429).
[[noreturn]] void throw_upload_failure(const std::string& what, const Response& response) {
    std::string text = what + ": " + describe_http_error(response);
    if (is_retryable(response.status)) throw TransportError(TransportError::Kind::Transient, text);
    throw Error(text);
}

// The registry refused a Content-Range chunk: it takes no chunked uploads (416, or another
// 4xx); the blob is streamed instead.
struct ChunksRefused : Error {
    using Error::Error;
};

class Pusher {
public:
    Pusher(oci::Store& store, const oci::ImageEntry& image, const Reference& target, const PushOptions& options)
        : store_(store), image_(image), target_(target), options_(options) {
        auto cancelled = [this] { return cancelled_now(); };
        factory_ = options.transports ? options.transports
                                      : curl_transport_factory(TlsOptions{options.tls_verify, default_certs_dir()}, cancelled);
        ClientOptions client_options;
        client_options.tls_verify = options.tls_verify;
        client_options.actions = "pull,push";
        client_options.retry = options.retry;
        client_options.debug = options.debug;
        client_options.cancelled = cancelled;
        client_ = std::make_unique<RegistryClient>(Endpoint{target.api_host(), std::nullopt}, target.domain, target.path,
                                                   find_credentials(target.domain), std::move(client_options));
    }

    PushResult run() {
        const oci::Descriptor& top = image_.descriptor;
        if (top.media_type != oci::media_type::kOciManifest && top.media_type != oci::media_type::kDockerManifest)
            throw Error("pushing " + (top.media_type.empty() ? std::string("an image without a media type") : top.media_type) +
                        " is not supported (only image manifests)");
        if (target_.digest && *target_.digest != top.digest)
            throw Error("the image's manifest is " + top.digest.str() + ", not the digest the destination names");
        // Lease, then look (oci/lease.hpp): nothing this push reads is collected under it.
        auto lease = oci::Lease::create(store_, "push", {oci::LeaseEntry::blob(top.digest)});
        std::string manifest_bytes = oci::read_manifest_blob(store_, top);
        oci::Manifest manifest = with_context("manifest " + top.digest.short_form(), [&] {
            return oci::parse_manifest(manifest_bytes, oci::detect_manifest_kind(top.media_type, manifest_bytes));
        });
        std::vector<oci::Descriptor> blobs = manifest_blobs(manifest);
        std::vector<oci::LeaseEntry> entries;
        for (const auto& b : blobs) entries.push_back(oci::LeaseEntry::blob(b.digest));
        lease->add(entries);
        for (const auto& b : blobs)
            if (!store_.has_blob(b.digest))
                throw Error("blob " + b.digest.short_form() + " of the image is missing from the store",
                            "pull or build the image again");

        auto transport = factory_();
        client_->ping(*transport);
        check_access(*transport);
        if (options_.observer) options_.observer->on_manifest(target_, top, blobs.size());
        run_workers(blobs.size(), options_.parallel, factory_, std::move(transport), failed_,
                    [this] { return cancelled_now(); },
                    [&](Transport& t, std::size_t i) { push_blob(t, blobs[i]); });
        if (cancelled_now()) throw Error("interrupted");
        auto last = factory_();
        put_manifest(*last, manifest_bytes);
        record_sources(blobs);

        PushResult result;
        result.name = target_.str();
        result.manifest = top;
        result.uploaded = uploaded_;
        result.mounted = mounted_;
        result.present = present_;
        result.uploaded_bytes = uploaded_bytes_;
        return result;
    }

private:
    bool cancelled_now() const { return failed_.load() || (options_.cancel && options_.cancel->load()); }
    std::string blobs_url() const { return client_->base_url() + "/v2/" + target_.path + "/blobs/"; }
    void message(const std::string& text) const {
        if (options_.observer) options_.observer->on_message(text);
    }

    // GET /v2/ with the credentials ping chose: a password the registry refuses fails here,
    // once, rather than in whichever blob's request a worker happens to send first.
    void check_access(Transport& transport) {
        Request request;
        request.url = client_->base_url() + "/v2/";
        Response response = client_->send(transport, request);
        if (response.status != 200) throw Error("GET " + request.url + ": " + describe_http_error(response));
    }

    // One blob, from HEAD to its last PUT. A transient failure (a cut connection, a 5xx)
    // starts it over, with a new session, after a backoff; the HEAD at the start of each round
    // notices a blob the registry completed before the connection broke.
    void push_blob(Transport& transport, const oci::Descriptor& blob) {
        with_context("blob " + blob.digest.short_form(), [&] {
            for (int attempt = 1;; ++attempt) {
                try {
                    return push_blob_once(transport, blob);
                } catch (const TransportError& e) {
                    if (!e.transient() || attempt >= options_.retry.max_attempts) throw;
                    message("blob " + blob.digest.short_form() + ": " + e.message() + "; starting its upload over");
                    client_->wait(backoff_delay(options_.retry, attempt));
                }
            }
        });
    }

    void push_blob_once(Transport& transport, const oci::Descriptor& blob) {
        if (registry_has(transport, blob)) {
            ++present_;
            if (options_.observer) options_.observer->on_blob_skipped(blob);
            return;
        }
        std::string location;
        if (auto from = choose_mount_source(oci::read_blob_sources(store_, blob.digest), target_.domain, target_.path)) {
            if (auto session = mount(transport, blob, *from); !session) {
                ++mounted_;
                message("Mounted blob " + blob.digest.short_form() + " from " + *from);
                return;
            } else {
                location = *session;
            }
        }
        if (location.empty()) location = start_upload(transport);
        if (options_.observer) options_.observer->on_blob_started(blob, 0);
        const auto size = static_cast<std::uint64_t>(blob.size);
        switch (choose_upload_method(size, chunks_refused_ ? 0 : options_.chunk_size)) {
            case UploadMethod::Monolithic:
                finish_upload(transport, blob, location, body_of(blob, 0, size));
                break;
            case UploadMethod::Streamed:
                finish_upload(transport, blob, patch(transport, blob, location, 0, size, false), std::nullopt);
                break;
            case UploadMethod::Chunked:
                try {
                    for (std::uint64_t offset = 0; offset < size; offset += options_.chunk_size)
                        location = patch(transport, blob, location, offset, std::min(options_.chunk_size, size - offset), true);
                } catch (const ChunksRefused& refused) {
                    chunks_refused_ = true;
                    message("the registry refused a chunk (" + refused.message() + "); streaming the blobs instead");
                    return push_blob_once(transport, blob);  // chunks_refused_ makes it a streamed one
                }
                finish_upload(transport, blob, location, std::nullopt);
                break;
        }
        ++uploaded_;
        if (options_.observer) options_.observer->on_blob_done(blob);
    }

    bool registry_has(Transport& transport, const oci::Descriptor& blob) {
        Request request;
        request.method = "HEAD";
        request.url = blobs_url() + blob.digest.str();
        Response response = client_->send(transport, request);
        if (response.status == 200) return true;
        if (response.status == 404) return false;
        throw Error("HEAD " + request.url + ": " + describe_http_error(response));
    }

    // POST ?mount=&from=: nullopt when the registry mounted the blob (201); else the upload
    // session it opened instead (202: it cannot mount, e.g. no pull right on the source), or
    // an empty string when it refused the request (then a plain upload follows).
    std::optional<std::string> mount(Transport& transport, const oci::Descriptor& blob, const std::string& from) {
        Request request;
        request.method = "POST";
        request.url = add_query(add_query(blobs_url() + "uploads/", "mount", blob.digest.str()), "from", from);
        Response response;
        try {
            response = client_->send(transport, request);
        } catch (const TransportError&) {
            throw;
        } catch (const Error& e) {  // 401: no token covers the source repository
            message("mounting blob " + blob.digest.short_form() + " from " + from + " failed (" + e.message() + "); uploading it");
            return std::string();
        }
        if (response.status == 201) return std::nullopt;
        if (response.status == 202) return next_location(request.url, response.header("location"));
        return std::string();
    }

    // The upload URL the registry's answer names, followed as a redirect is (pull's rule): from
    // https to plain http only to a loopback address or with --tls-verify=false, since the blob
    // would cross the network in clear.
    std::string next_location(std::string_view answered_url, std::optional<std::string_view> location) {
        std::string url = upload_location(answered_url, location);
        client_->check_redirect(answered_url, url);
        return url;
    }

    std::string start_upload(Transport& transport) {
        Request request;
        request.method = "POST";
        request.url = blobs_url() + "uploads/";
        request.replayable = false;  // each POST opens a session; the caller's retry opens one
        Response response = client_->send(transport, request);
        if (response.status != 202) throw_upload_failure("POST " + request.url, response);
        return next_location(request.url, response.header("location"));
    }

    RequestBody body_of(const oci::Descriptor& blob, std::uint64_t offset, std::uint64_t length) const {
        RequestBody body;
        body.file = store_.blob_path(blob.digest);
        body.offset = offset;
        body.length = length;
        return body;
    }

    Request upload_request(const std::string& method, const std::string& url, const oci::Descriptor& blob,
                           std::optional<RequestBody> body, std::uint64_t offset) {
        Request request;
        request.method = method;
        request.url = url;
        request.replayable = false;
        if (body) {
            request.headers.emplace_back("Content-Type", kOctetStream);
            request.on_upload_progress = [this, blob, offset, last = std::uint64_t{0}](std::uint64_t sent) mutable {
                if (sent > last) uploaded_bytes_ += sent - last;
                last = sent;
                if (options_.observer) options_.observer->on_blob_progress(blob, offset + sent);
            };
        }
        request.body = std::move(body);
        return request;
    }

    // Sends an upload request; a transport failure names it ("PATCH <url>: ...").
    Response send_upload(Transport& transport, const Request& request) {
        try {
            return client_->send(transport, request);
        } catch (TransportError& e) {
            e.add_context(request.method + " " + redact_url(request.url));
            throw;
        }
    }

    // PATCH length bytes from offset; returns the session's next location. chunked: with
    // Content-Range, and a 4xx is ChunksRefused.
    std::string patch(Transport& transport, const oci::Descriptor& blob, const std::string& location,
                      std::uint64_t offset, std::uint64_t length, bool chunked) {
        Request request = upload_request("PATCH", location, blob, body_of(blob, offset, length), offset);
        if (chunked) request.headers.emplace_back("Content-Range", chunk_content_range(offset, length));
        Response response = send_upload(transport, request);
        if (response.status != 202) {
            if (chunked && response.status >= 400 && response.status < 500 && response.status != 429)
                throw ChunksRefused(describe_http_error(response));
            throw_upload_failure("PATCH " + redact_url(location), response);
        }
        if (auto range = response.header("range")) {
            auto last = parse_upload_range(*range);
            if (!last || *last != offset + length - 1)
                throw Error("PATCH " + redact_url(location) + ": the registry holds \"" + *range + "\" of the upload, not 0-" +
                            std::to_string(offset + length - 1));
        }
        return next_location(location, response.header("location"));
    }

    // PUT ?digest= (with the whole blob, or empty after PATCHes): the registry verifies the
    // digest and makes the blob part of the repository.
    void finish_upload(Transport& transport, const oci::Descriptor& blob, const std::string& location,
                       std::optional<RequestBody> body) {
        Request request = upload_request("PUT", add_query(location, "digest", blob.digest.str()), blob, std::move(body), 0);
        Response response = send_upload(transport, request);
        if (response.status != 201 && response.status != 204)
            throw_upload_failure("PUT " + redact_url(location), response);
        check_digest_header(response, blob.digest, "PUT " + redact_url(location));
    }

    static void check_digest_header(const Response& response, const oci::Digest& expected, const std::string& what) {
        auto header = response.header("docker-content-digest");
        if (header && !header->empty() && *header != expected.str())
            throw Error(what + ": the registry stored " + *header + ", not " + expected.str());
    }

    void put_manifest(Transport& transport, const std::string& bytes) {
        Request request;
        request.method = "PUT";
        request.url = client_->base_url() + "/v2/" + target_.path + "/manifests/" +
                      (target_.tag.empty() ? target_.digest->str() : target_.tag);
        request.headers.emplace_back("Content-Type", image_.descriptor.media_type);
        request.body = RequestBody{bytes, {}, 0, 0};
        Response response = client_->send(transport, request);
        if (response.status != 201 && response.status != 200)
            throw Error("PUT " + request.url + ": " + describe_http_error(response));
        check_digest_header(response, image_.descriptor.digest, "PUT " + request.url);
    }

    // The repository now holds every blob: a later push to another repository of this registry
    // may mount them from it. Best effort, as in the pull.
    void record_sources(const std::vector<oci::Descriptor>& blobs) {
        for (const auto& d : blobs) {
            try {
                oci::record_blob_source(store_, d.digest, {target_.domain, target_.path});
            } catch (const Error& e) {
                if (options_.debug) options_.debug("not recorded as a blob source: " + e.message());
            }
        }
    }

    oci::Store& store_;
    const oci::ImageEntry& image_;
    const Reference& target_;
    const PushOptions& options_;
    TransportFactory factory_;
    std::unique_ptr<RegistryClient> client_;
    std::atomic<bool> failed_{false};
    std::atomic<bool> chunks_refused_{false};
    std::atomic<std::size_t> uploaded_{0}, mounted_{0}, present_{0};
    std::atomic<std::uint64_t> uploaded_bytes_{0};
};

}  // namespace

PushResult push_image(oci::Store& store, const oci::ImageEntry& image, const Reference& target,
                      const PushOptions& options) {
    return with_context("push " + image.name + " to " + target.str(), [&] { return Pusher(store, image, target, options).run(); });
}

}  // namespace aishell::registry
