// The HTTP seam: a Transport sends one request and returns one response (no redirects, no
// auth, no retries: the registry client above does those, which keeps that logic testable
// with a fake transport). CurlTransport is the real one: one libcurl easy handle, reused for
// every request it sends so connections stay open (one transport per worker thread).
// Also small URL helpers and the redaction used by --debug logging.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.hpp"

namespace aishell::registry {

inline constexpr std::uint64_t kMaxErrorBody = 1024 * 1024;  // error bodies, token responses

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Response;

// What a request uploads: bytes in memory, or a range of a file (a blob in the store, read as
// it is sent, so a large layer never sits in memory). Read again from its start each time the
// request is sent (a redirect, a new token).
struct RequestBody {
    std::string data;            // used when file is empty
    std::filesystem::path file;  // else: length bytes of this file from offset
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    std::uint64_t size() const noexcept { return file.empty() ? data.size() : length; }
};

struct Request {
    std::string method = "GET";
    std::string url;
    Headers headers;
    // Bodies of non-2xx responses, and of 2xx responses without a sink, are buffered up to
    // this many bytes; a larger body fails the request ("exceeds the N bytes limit").
    std::uint64_t max_body = kMaxErrorBody;
    // When set, the body of a 2xx response streams here instead of into Response::body.
    std::function<void(std::string_view)> sink;
    // When set, called with the response's status and headers before the first body byte
    // goes to the sink (a resuming download checks Content-Range there).
    std::function<void(const Response&)> on_head;
    // When set, called with the body bytes received so far.
    std::function<void(std::uint64_t)> on_progress;
    // Sent as the request body (with Content-Length). POST, PUT and PATCH always send one,
    // empty when this is unset.
    std::optional<RequestBody> body;
    // When set, called with the body bytes sent so far.
    std::function<void(std::uint64_t)> on_upload_progress;
    // False for a request that must not be sent twice blindly (an upload's PATCH: a registry
    // appends what a cut request delivered, so resending it would corrupt the upload): a
    // transient failure or a 5xx goes back to the caller, which starts over its own way.
    bool replayable = true;
};

struct Response {
    int status = 0;
    Headers headers;  // names lowercased
    std::string body;
    std::optional<std::string> header(std::string_view name) const;  // name in lowercase
    std::vector<std::string> all(std::string_view name) const;
};

// A network-level failure (no HTTP response). transient says whether a retry may help
// (connection refused/reset, timeouts, a cut transfer); TLS and DNS failures are not.
class TransportError : public Error {
public:
    // Unreachable: connection refused (transient too: a registry may be restarting).
    // TlsHandshake: no TLS session could be set up (e.g. the server speaks plain HTTP).
    enum class Kind { Transient, Unreachable, Permanent, TlsHandshake, Cancelled };
    TransportError(Kind kind, std::string message, std::string hint = {})
        : Error(std::move(message), std::move(hint)), kind_(kind) {}
    Kind kind() const noexcept { return kind_; }
    bool transient() const noexcept { return kind_ == Kind::Transient || kind_ == Kind::Unreachable; }

private:
    Kind kind_;
};

class Transport {
public:
    virtual ~Transport() = default;
    // Sends request; throws TransportError when no response arrived, Error when the sink
    // throws or a buffered body is too large.
    virtual Response send(const Request& request) = 0;
};

struct TlsOptions {
    bool verify = true;
    // Per-registry CAs and client certificates, Docker's convention:
    // <certs_dir>/<host[:port]>/ca.crt, client.cert, client.key.
    std::filesystem::path certs_dir;
};

// Makes transports; each worker thread gets its own (libcurl easy handles are not shared
// between threads).
using TransportFactory = std::function<std::unique_ptr<Transport>()>;

// cancelled: polled during transfers; when it returns true they stop with
// TransportError(Cancelled).
TransportFactory curl_transport_factory(TlsOptions tls, std::function<bool()> cancelled);

// ~/.aishell/certs.d
std::filesystem::path default_certs_dir();

// URL helpers (enough for registry URLs: scheme://authority/path?query).
struct UrlParts {
    std::string scheme;
    std::string authority;  // host[:port]
    std::string path_and_query;
};
std::optional<UrlParts> split_url(std::string_view url);
// Resolves a Location header against the URL it came from (absolute, //authority, /path,
// relative path).
std::string resolve_url(std::string_view base, std::string_view location);
// The origin of a URL (RFC 6454: scheme, host, port), normalized for comparison: lowercase
// scheme and host, the scheme's default port made explicit ("https://reg:443" for
// "HTTPS://Reg/v2/"). Empty when the URL cannot be split or its port is not a number.
std::string url_origin(std::string_view url);
std::string url_encode(std::string_view s);

// A header value as --debug may print it: credentials and tokens replaced by "<redacted>".
std::string redact_header(std::string_view lowercase_name, std::string_view value);
// A URL with any query values that could carry secrets (token, password, ...) redacted.
std::string redact_url(std::string_view url);

}  // namespace aishell::registry
