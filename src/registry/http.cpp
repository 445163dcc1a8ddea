// CurlTransport (one reused easy handle), URL helpers and header redaction.
#include "registry/http.hpp"

#include <curl/curl.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>

#include "aishell_version.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "registry/reference.hpp"

namespace aishell::registry {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

std::string trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
        s.remove_suffix(1);
    return std::string(s);
}

struct CurlDeleter {
    void operator()(CURL* h) const noexcept { curl_easy_cleanup(h); }
};
struct SlistDeleter {
    void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
};
using CurlHandle = std::unique_ptr<CURL, CurlDeleter>;
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

void global_init() {
    // curl_global_init is not thread-safe; run it once, before any worker starts.
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// State of one transfer, reached from curl's callbacks.
struct Transfer {
    const Request* request = nullptr;
    const std::function<bool()>* cancelled = nullptr;
    bool head_seen = false;
    Response response;
    std::uint64_t received = 0;
    std::exception_ptr error;  // thrown by the sink or a limit, rethrown after perform
    // The upload: a file range read with pread, or request->body->data.
    UniqueFd upload_fd;
    std::uint64_t sent = 0;
};

bool success_status(int status) { return status >= 200 && status < 300; }

size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    std::string_view line(data, size * n);
    if (line.starts_with("HTTP/")) {  // a new status line (after a 100 Continue, say)
        t->response.headers.clear();
        auto sp = line.find(' ');
        t->response.status = sp == std::string_view::npos ? 0 : std::atoi(std::string(line.substr(sp + 1, 3)).c_str());
        return size * n;
    }
    auto colon = line.find(':');
    if (colon != std::string_view::npos)
        t->response.headers.emplace_back(lower(trim(line.substr(0, colon))), trim(line.substr(colon + 1)));
    return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    std::string_view chunk(data, size * n);
    try {
        t->received += chunk.size();
        if (success_status(t->response.status) && t->request->sink) {
            if (!t->head_seen) {
                t->head_seen = true;
                if (t->request->on_head) t->request->on_head(t->response);
            }
            t->request->sink(chunk);
        } else {
            if (t->response.body.size() + chunk.size() > t->request->max_body)
                throw Error("response body exceeds the " + std::to_string(t->request->max_body) + " bytes limit");
            t->response.body.append(chunk);
        }
        if (t->request->on_progress) t->request->on_progress(t->received);
    } catch (...) {
        t->error = std::current_exception();
        return 0;  // makes curl fail with CURLE_WRITE_ERROR
    }
    return size * n;
}

size_t on_read(char* buffer, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const RequestBody& body = *t->request->body;
    std::uint64_t want = std::min<std::uint64_t>(size * n, body.size() - t->sent);
    if (want == 0) return 0;
    if (body.file.empty()) {
        std::memcpy(buffer, body.data.data() + t->sent, want);
    } else {
        ssize_t got;
        do {
            got = ::pread(t->upload_fd.get(), buffer, want, static_cast<off_t>(body.offset + t->sent));
        } while (got < 0 && errno == EINTR);
        if (got <= 0) {  // an error, or the file is shorter than the range it should hold
            if (got < 0)
                t->error = std::make_exception_ptr(SystemError(errno, "read", body.file.string()));
            else
                t->error = std::make_exception_ptr(Error("read " + body.file.string() + ": the file ended before the " +
                                                         std::to_string(body.offset + body.length) + " bytes to upload"));
            return CURL_READFUNC_ABORT;
        }
        want = static_cast<std::uint64_t>(got);
    }
    t->sent += want;
    return want;
}

int on_xferinfo(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t uploaded) {
    auto* t = static_cast<Transfer*>(user);
    if (uploaded > 0 && t->request->on_upload_progress) {
        try {
            t->request->on_upload_progress(static_cast<std::uint64_t>(uploaded));
        } catch (...) {
            t->error = std::current_exception();
            return 1;
        }
    }
    return *t->cancelled && (*t->cancelled)() ? 1 : 0;
}

TransportError::Kind classify(CURLcode code) {
    switch (code) {
        case CURLE_COULDNT_CONNECT:
            return TransportError::Kind::Unreachable;
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
        case CURLE_GOT_NOTHING:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
            return TransportError::Kind::Transient;
        case CURLE_SSL_CONNECT_ERROR:
            return TransportError::Kind::TlsHandshake;
        case CURLE_ABORTED_BY_CALLBACK:
            return TransportError::Kind::Cancelled;
        default:
            return TransportError::Kind::Permanent;
    }
}

std::string hint_for(CURLcode code, const std::string& authority) {
    switch (code) {
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
            return "put the registry's CA certificate in ~/.aishell/certs.d/" + authority +
                   "/ca.crt, or use --tls-verify=false if you trust the network";
        case CURLE_COULDNT_RESOLVE_HOST:
            return "check the registry name and your network";
        default:
            return {};
    }
}

class CurlTransport final : public Transport {
public:
    CurlTransport(TlsOptions tls, std::function<bool()> cancelled)
        : tls_(std::move(tls)), cancelled_(std::move(cancelled)), handle_(curl_easy_init()) {
        if (!handle_) throw Error("curl_easy_init failed");
    }

    Response send(const Request& request) override {
        CURL* h = handle_.get();
        // Reset per-request options but keep the connection cache (curl_easy_reset keeps it).
        curl_easy_reset(h);
        Transfer t;
        t.request = &request;
        t.cancelled = &cancelled_;
        auto parts = split_url(request.url);
        if (!parts) throw Error("invalid URL " + request.url);

        const bool uploads = request.body || request.method == "POST" || request.method == "PUT" || request.method == "PATCH";
        Slist headers = header_list(request, uploads);
        curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        if (request.method == "HEAD") curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        if (uploads) set_upload(h, t);
        if (request.method != "GET" && request.method != "HEAD")
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
        set_transfer_options(h, t);
        configure_tls(h, parts->authority);

        CURLcode code = curl_easy_perform(h);
        if (t.error) std::rethrow_exception(t.error);
        if (code != CURLE_OK)
            throw TransportError(classify(code),
                                 classify(code) == TransportError::Kind::Cancelled ? "interrupted" : curl_easy_strerror(code),
                                 hint_for(code, parts->authority));
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        t.response.status = static_cast<int>(status);
        return std::move(t.response);
    }

private:
    static void append(Slist& list, const std::string& line) {
        curl_slist* next = curl_slist_append(list.get(), line.c_str());
        if (!next) throw Error("curl_slist_append failed");
        (void)list.release();
        list.reset(next);
    }

    static Slist header_list(const Request& request, bool uploads) {
        Slist headers;
        for (const auto& [name, value] : request.headers) append(headers, name + ": " + value);
        // No "Expect: 100-continue" (curl adds it to large bodies): registries answer without
        // it, and waiting for the 100 costs a round trip or curl's 1 s timeout.
        if (uploads) append(headers, "Expect:");
        return headers;
    }

    // CURLOPT_UPLOAD streams the body from on_read with a Content-Length (PUT by default;
    // CUSTOMREQUEST names the method).
    static void set_upload(CURL* h, Transfer& t) {
        const Request& request = *t.request;
        if (request.body && !request.body->file.empty()) t.upload_fd = open_file(request.body->file, O_RDONLY);
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &t);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body ? request.body->size() : 0));
        curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
    }

    // What every request sets alike: limits, and the callbacks that fill t.response.
    static void set_transfer_options(CURL* h, Transfer& t) {
        curl_easy_setopt(h, CURLOPT_USERAGENT, "aishell/" AISHELL_VERSION);
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);  // the client follows, dropping credentials
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);        // no SIGALRM in a threaded program
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
        // A stalled transfer (under 1 byte/s for 60 s) is an error, retried as transient.
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
    }

    void configure_tls(CURL* h, const std::string& authority) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, tls_.verify ? 1L : 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, tls_.verify ? 2L : 0L);
        if (tls_.certs_dir.empty()) return;
        // Docker's certs.d: a registry's own CA (it replaces the system bundle for that host,
        // which is what a private CA needs) and an optional client certificate.
        fs::path dir = tls_.certs_dir / authority;
        std::error_code ec;
        if (fs::is_regular_file(dir / "ca.crt", ec)) {
            ca_path_ = (dir / "ca.crt").string();
            curl_easy_setopt(h, CURLOPT_CAINFO, ca_path_.c_str());
        }
        if (fs::is_regular_file(dir / "client.cert", ec) && fs::is_regular_file(dir / "client.key", ec)) {
            cert_path_ = (dir / "client.cert").string();
            key_path_ = (dir / "client.key").string();
            curl_easy_setopt(h, CURLOPT_SSLCERT, cert_path_.c_str());
            curl_easy_setopt(h, CURLOPT_SSLKEY, key_path_.c_str());
        }
    }

    TlsOptions tls_;
    std::function<bool()> cancelled_;
    CurlHandle handle_;
    std::string ca_path_, cert_path_, key_path_;  // curl keeps pointers until the next reset
};

}  // namespace

std::optional<std::string> Response::header(std::string_view name) const {
    for (const auto& [k, v] : headers)
        if (k == name) return v;
    return std::nullopt;
}

std::vector<std::string> Response::all(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : headers)
        if (k == name) out.push_back(v);
    return out;
}

TransportFactory curl_transport_factory(TlsOptions tls, std::function<bool()> cancelled) {
    global_init();
    return [tls = std::move(tls), cancelled = std::move(cancelled)] {
        return std::make_unique<CurlTransport>(tls, cancelled);
    };
}

fs::path default_certs_dir() { return home_dir() / ".aishell" / "certs.d"; }

std::optional<UrlParts> split_url(std::string_view url) {
    auto sep = url.find("://");
    if (sep == std::string_view::npos) return std::nullopt;
    UrlParts p;
    p.scheme = lower(url.substr(0, sep));
    std::string_view rest = url.substr(sep + 3);
    auto slash = rest.find_first_of("/?#");
    p.authority = std::string(rest.substr(0, slash));
    p.path_and_query = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
    if (p.authority.empty()) return std::nullopt;
    // Credentials in the authority are not used; drop them so they are never logged.
    if (auto at = p.authority.rfind('@'); at != std::string::npos) p.authority.erase(0, at + 1);
    return p;
}

std::string resolve_url(std::string_view base, std::string_view location) {
    if (location.find("://") != std::string_view::npos) return std::string(location);
    auto b = split_url(base);
    if (!b) return std::string(location);
    if (location.starts_with("//")) return b->scheme + ":" + std::string(location);
    if (location.starts_with("/")) return b->scheme + "://" + b->authority + std::string(location);
    std::string dir = b->path_and_query.substr(0, b->path_and_query.find('?'));
    dir = dir.substr(0, dir.rfind('/') + 1);
    return b->scheme + "://" + b->authority + dir + std::string(location);
}

std::string url_origin(std::string_view url) {
    auto parts = split_url(url);
    if (!parts) return {};
    std::string_view authority = parts->authority;
    std::string_view host = authority;
    std::string_view port;
    if (authority.starts_with('[')) {  // [v6]:port
        auto close = authority.find(']');
        if (close == std::string_view::npos) return {};
        host = authority.substr(0, close + 1);
        std::string_view rest = authority.substr(close + 1);
        if (!rest.empty() && rest.front() != ':') return {};
        if (!rest.empty()) port = rest.substr(1);
    } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
    }
    if (!std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) return {};
    while (port.size() > 1 && port.front() == '0') port.remove_prefix(1);  // "0443" is 443
    std::string number(port);
    if (number.empty()) number = parts->scheme == "https" ? "443" : parts->scheme == "http" ? "80" : "";
    return parts->scheme + "://" + lower(host) + ":" + number;
}

std::string url_encode(std::string_view s) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    return out;
}

std::string redact_header(std::string_view name, std::string_view value) {
    if (name == "authorization" || name == "proxy-authorization") {
        auto sp = value.find(' ');
        return sp == std::string_view::npos ? "<redacted>" : std::string(value.substr(0, sp)) + " <redacted>";
    }
    if (name == "cookie" || name == "set-cookie" || name == "x-registry-auth") return "<redacted>";
    return std::string(value);
}

std::string redact_url(std::string_view url) {
    auto q = url.find('?');
    if (q == std::string_view::npos) return std::string(url);
    std::string out(url.substr(0, q + 1));
    std::string_view query = url.substr(q + 1);
    bool first = true;
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        auto eq = pair.find('=');
        std::string key = lower(pair.substr(0, eq));
        bool secret = key.find("token") != std::string::npos || key.find("password") != std::string::npos ||
                      key.find("secret") != std::string::npos || key.find("signature") != std::string::npos ||
                      key == "sig" || key.find("credential") != std::string::npos;
        if (!first) out += '&';
        first = false;
        out += secret && eq != std::string_view::npos ? std::string(pair.substr(0, eq)) + "=<redacted>" : std::string(pair);
        if (amp == std::string_view::npos) break;
        query = query.substr(amp + 1);
    }
    return out;
}

}  // namespace aishell::registry
