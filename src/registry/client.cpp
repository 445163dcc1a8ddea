// The registry client: scheme detection, the auth flow, redirects and retries.
#include "registry/client.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <thread>

#include <nlohmann/json.hpp>

#include "oci/json_parse.hpp"
#include "registry/reference.hpp"

namespace aishell::registry {

namespace {

constexpr int kMaxRedirects = 10;

bool is_redirect(int status) {
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

bool is_retryable_status(int status) {
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}


std::string status_text(int status) {
    switch (status) {
        case 400: return "bad request";
        case 401: return "unauthorized";
        case 403: return "denied";
        case 404: return "not found";
        case 405: return "method not allowed";
        case 416: return "range not satisfiable";
        case 429: return "too many requests";
        case 500: return "internal server error";
        case 502: return "bad gateway";
        case 503: return "service unavailable";
        case 504: return "gateway timeout";
        default: return status >= 500 ? "server error" : "unexpected status";
    }
}

void remove_header(Headers& headers, std::string_view lowercase_name) {
    std::erase_if(headers, [&](const auto& h) {
        std::string n = h.first;
        for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return n == lowercase_name;
    });
}

}  // namespace

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value, std::time_t now) {
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (value.empty()) return std::nullopt;
    if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        if (value.size() > 9) return std::chrono::seconds(999999999);
        return std::chrono::seconds(std::stol(std::string(value)));
    }
    std::time_t when = curl_getdate(std::string(value).c_str(), nullptr);
    if (when < 0) return std::nullopt;
    return std::chrono::seconds(std::max<std::time_t>(0, when - now));
}

std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int attempt) {
    auto delay = policy.base_delay;
    for (int i = 1; i < attempt && delay < policy.max_delay; ++i) delay *= 2;
    return std::min(delay, policy.max_delay);
}

std::string describe_http_error(const Response& response) {
    std::string text = "HTTP " + std::to_string(response.status) + " " + status_text(response.status);
    // Distribution's error body: {"errors":[{"code":"MANIFEST_UNKNOWN","message":"...",...}]}
    nlohmann::json body = oci::parse_json(response.body);
    std::string details;
    if (!body.is_discarded() && body.is_object() && body.contains("errors") && body["errors"].is_array()) {
        for (const auto& e : body["errors"]) {
            if (!e.is_object()) continue;
            std::string message = e.value("message", "");
            std::string code = e.value("code", "");
            std::string one = message.empty() ? code : message;
            if (one.empty()) continue;
            if (!details.empty()) details += "; ";
            details += one.substr(0, 200);
        }
    }
    if (!details.empty()) text += " (" + details + ")";
    return text;
}

Endpoint Endpoint::parse(std::string_view text) {
    Endpoint e;
    if (auto parts = split_url(text)) {
        if (parts->scheme != "http" && parts->scheme != "https")
            throw Error("registry URL " + std::string(text) + ": scheme must be http or https");
        e.scheme = parts->scheme;
        e.authority = parts->authority;
    } else {
        e.authority = std::string(text.substr(0, text.find('/')));
    }
    if (e.authority.empty()) throw Error("invalid registry address \"" + std::string(text) + "\"");
    return e;
}

RegistryClient::RegistryClient(Endpoint endpoint, std::string registry, std::string repository,
                               std::optional<Credentials> credentials, ClientOptions options)
    : endpoint_(std::move(endpoint)),
      registry_(std::move(registry)),
      repository_(std::move(repository)),
      credentials_(std::move(credentials)),
      options_(std::move(options)) {
    if (endpoint_.scheme) scheme_ = *endpoint_.scheme;
}

std::string RegistryClient::base_url() const { return scheme_ + "://" + endpoint_.authority; }

void RegistryClient::check_cancelled() const {
    if (options_.cancelled && options_.cancelled()) throw TransportError(TransportError::Kind::Cancelled, "interrupted");
}

void RegistryClient::wait(std::chrono::milliseconds delay) const {
    if (options_.sleep) {
        options_.sleep(delay);
    } else {
        // Sleep in slices so Ctrl-C is not held up by a long Retry-After.
        auto until = std::chrono::steady_clock::now() + delay;
        while (std::chrono::steady_clock::now() < until) {
            check_cancelled();
            std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
                std::chrono::milliseconds(50), until - std::chrono::steady_clock::now()));
        }
    }
    check_cancelled();
}

std::string RegistryClient::current_auth() const {
    std::lock_guard lock(mutex_);
    return auth_;
}

Response RegistryClient::send_once(Transport& transport, Request& request) {
    if (options_.debug) {
        std::string line = "> " + request.method + " " + redact_url(request.url);
        for (const auto& [name, value] : request.headers) {
            std::string lname = name;
            for (char& c : lname) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            line += "\n>   " + name + ": " + redact_header(lname, value);
        }
        options_.debug(line);
    }
    Response response = transport.send(request);
    if (options_.debug) {
        std::string line = "< " + std::to_string(response.status) + " " + redact_url(request.url);
        for (const auto& [name, value] : response.headers) line += "\n<   " + name + ": " + redact_header(name, value);
        // Error bodies help; successful bodies may be tokens and are never logged.
        if (response.status >= 300 && !response.body.empty())
            line += "\n<   body: " + response.body.substr(0, 512);
        options_.debug(line);
    }
    return response;
}

Request RegistryClient::attempt_at(const Request& request, const std::string& url, bool with_auth,
                                   const std::function<void(Request&)>& prepare, std::string& used) const {
    Request attempt = request;
    attempt.url = url;
    if (prepare) prepare(attempt);
    // Credentials go only to the origin they were meant for (scheme, host and port), never
    // across a redirect: not to another host, and not to http://reg after https://reg, where
    // the host (and, with default ports, the authority) is the same but the header would
    // travel in clear text.
    const std::string origin = url_origin(request.url);
    const bool same_origin = !origin.empty() && url_origin(url) == origin;
    if (!same_origin) remove_header(attempt.headers, "authorization");
    used.clear();
    if (with_auth && same_origin && origin == url_origin(base_url())) {
        used = current_auth();
        if (!used.empty()) attempt.headers.emplace_back("Authorization", used);
    }
    return attempt;
}

// The wait before retrying an answer: the backoff, or what a 429 or 503 asks for in
// Retry-After (RFC 9110, 10.2.3), capped.
std::chrono::milliseconds RegistryClient::retry_delay(const Response& response, int failures) const {
    auto delay = backoff_delay(options_.retry, failures);
    if (response.status == 429 || response.status == 503) {
        if (auto header = response.header("retry-after")) {
            if (auto after = parse_retry_after(*header, std::time(nullptr)))
                delay = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::min(*after, options_.retry.max_retry_after));
        }
    }
    return delay;
}

void RegistryClient::wait_to_retry(const std::string& url, std::chrono::milliseconds delay,
                                   const std::string& why) const {
    if (options_.debug)
        options_.debug("retrying " + redact_url(url) + " in " + std::to_string(delay.count()) + " ms: " + why);
    wait(delay);
}

Response RegistryClient::send_with_retries(Transport& transport, Request request, bool with_auth,
                                           const std::function<void(Request&)>& prepare) {
    const std::string origin = url_origin(request.url);
    std::string url = request.url;
    int failures = 0;
    int redirects = 0;
    bool reauthorized = false;
    for (;;) {
        check_cancelled();
        std::string used;
        Request attempt = attempt_at(request, url, with_auth, prepare, used);
        std::uint64_t received = 0;
        auto user_progress = request.on_progress;
        attempt.on_progress = [&received, user_progress](std::uint64_t n) {
            received = n;
            if (user_progress) user_progress(n);
        };

        Response response;
        try {
            response = send_once(transport, attempt);
        } catch (const TransportError& e) {
            if (!e.transient() || !request.replayable) throw;
            if (received > 0) failures = 0;  // progress was made: a resumed retry is worth it
            if (++failures >= options_.retry.max_attempts) throw;
            wait_to_retry(url, backoff_delay(options_.retry, failures), e.message());
            continue;
        }

        if (is_redirect(response.status)) {
            auto location = response.header("location");
            if (!location) return response;
            if (++redirects > kMaxRedirects) throw Error("too many redirects from " + redact_url(request.url));
            std::string next = resolve_url(url, *location);
            check_redirect(url, next);
            url = std::move(next);
            continue;
        }
        const bool same_origin = !origin.empty() && url_origin(url) == origin;
        if (response.status == 401 && with_auth && same_origin) {
            if (!reauthorized && reauthorize(transport, response, used)) {
                reauthorized = true;
                continue;
            }
            throw_unauthorized(response, attempt.method + " " + redact_url(url));
        }
        if (is_retryable_status(response.status) && request.replayable) {
            if (++failures >= options_.retry.max_attempts) return response;
            wait_to_retry(url, retry_delay(response, failures), "HTTP " + std::to_string(response.status));
            continue;
        }
        return response;
    }
}

// A redirect from HTTPS to plain HTTP would hand what follows to the network unprotected: the
// request (a presigned URL is itself a credential) and the answer, which for a manifest by tag
// no digest checks. Refused, as ping refuses plain HTTP, unless the target is a loopback
// address (the bytes never leave the machine), the registry is one (plain HTTP is accepted
// from it too: it is the user's own), or the user turned TLS verification off.
void RegistryClient::check_redirect(std::string_view from, std::string_view to) const {
    auto source = split_url(from);
    auto target = split_url(to);
    if (!source || source->scheme != "https" || !target || target->scheme != "http") return;
    if (is_loopback_host(target->authority) || is_loopback_host(endpoint_.authority) || !options_.tls_verify) return;
    throw Error("refusing a redirect from " + redact_url(from) + " to plain HTTP " + redact_url(to),
                "the registry sends clients to an unencrypted URL; use --tls-verify=false only if you trust the network");
}

Response RegistryClient::send(Transport& transport, Request request, const std::function<void(Request&)>& prepare) {
    if (request.url.starts_with("/")) request.url = base_url() + request.url;
    return send_with_retries(transport, std::move(request), true, prepare);
}

void RegistryClient::throw_unauthorized(const Response& response, std::string_view what) const {
    std::string hint = credentials_ ? "check the credentials stored for " + registry_ + " (aishell login " + registry_ + ")"
                                    : "log in first: aishell login " + registry_;
    throw Error(std::string(what) + ": " + describe_http_error(response), hint);
}

bool RegistryClient::reauthorize(Transport& transport, const Response& response, const std::string& used) {
    std::lock_guard lock(mutex_);
    if (auth_ != used) return true;  // another worker already refreshed it
    std::vector<Challenge> challenges;
    for (const auto& value : response.all("www-authenticate"))
        for (auto& c : parse_www_authenticate(value)) challenges.push_back(std::move(c));
    for (const auto& c : challenges) {
        if (c.scheme == "bearer") {
            auth_ = "Bearer " + fetch_token(transport, c);
            return true;
        }
    }
    for (const auto& c : challenges) {
        if (c.scheme == "basic" && credentials_) {
            std::string basic = "Basic " + base64_encode(credentials_->username + ":" + credentials_->password);
            if (used == basic) return false;  // these credentials were refused
            auth_ = basic;
            return true;
        }
    }
    return false;
}

std::string RegistryClient::fetch_token(Transport& transport, const Challenge& challenge) {
    std::string realm = challenge.param("realm");
    auto parts = split_url(realm);
    if (!parts || (parts->scheme != "https" && parts->scheme != "http"))
        throw Error("registry " + registry_ + " sent a Bearer challenge with an invalid realm \"" + realm + "\"");
    std::string scope = challenge.param("scope");
    if (scope.empty() && !repository_.empty()) scope = "repository:" + repository_ + ":" + options_.actions;
    std::string url = realm;
    char sep = realm.find('?') == std::string::npos ? '?' : '&';
    auto add = [&](std::string_view key, const std::string& value) {
        if (value.empty()) return;
        url += sep;
        url += std::string(key) + "=" + url_encode(value);
        sep = '&';
    };
    add("service", challenge.param("service"));
    // A challenge may name several scopes separated by spaces; each is its own parameter.
    for (std::size_t start = 0; start < scope.size();) {
        auto space = scope.find(' ', start);
        add("scope", scope.substr(start, space - start));
        if (space == std::string::npos) break;
        start = space + 1;
    }
    Request request;
    request.url = url;
    request.max_body = kMaxErrorBody;
    if (credentials_) {
        add("account", credentials_->username);
        request.url = url;
        // Credentials are not sent in clear text to a remote host.
        if (parts->scheme == "http" && !is_loopback_host(parts->authority) && options_.tls_verify)
            throw Error("token realm " + realm + " is plain HTTP; refusing to send credentials",
                        "use --tls-verify=false only if you trust the network");
        request.headers.emplace_back("Authorization",
                                     "Basic " + base64_encode(credentials_->username + ":" + credentials_->password));
    }
    Response response = send_with_retries(transport, request, false, nullptr);
    std::string what = "token request to " + parts->authority;
    if (response.status == 401 || response.status == 403)
        throw_unauthorized(response, what);
    if (response.status != 200) throw Error(what + ": " + describe_http_error(response));
    nlohmann::json body = oci::parse_json(response.body);
    if (body.is_discarded() || !body.is_object()) throw Error(what + ": malformed token response (not JSON)");
    for (const char* key : {"token", "access_token"}) {
        auto it = body.find(key);
        if (it != body.end() && it->is_string() && !it->get<std::string>().empty()) return it->get<std::string>();
    }
    throw Error(what + ": the response has no \"token\" or \"access_token\"");
}

Response RegistryClient::probe(Transport& transport, const std::string& scheme) {
    scheme_ = scheme;
    Request request;
    request.url = base_url() + "/v2/";
    return send_with_retries(transport, request, false, nullptr);
}

namespace {

// The schemes to try for a registry, in order: the one its URL names (plain HTTP only for a
// loopback registry or with TLS verification off), else HTTPS, then HTTP where that is allowed.
std::vector<std::string> ping_schemes(const Endpoint& endpoint, bool tls_verify) {
    const bool loopback = is_loopback_host(endpoint.authority);
    if (endpoint.scheme) {
        if (*endpoint.scheme == "http" && !loopback && tls_verify)
            throw Error("refusing plain HTTP to " + endpoint.authority + " (not a loopback registry)",
                        "use https://, or --tls-verify=false if you trust the network");
        return {*endpoint.scheme};
    }
    // Loopback registries are usually plain HTTP (as Docker treats 127.0.0.0/8 as insecure);
    // trying HTTP first also avoids hanging on a plain server that waits for a request line
    // while we wait for a TLS ServerHello. A TLS server answers plain HTTP with 400.
    if (loopback) return {"http", "https"};
    if (!tls_verify) return {"https", "http"};
    return {"https"};
}

}  // namespace

Response RegistryClient::find_registry(Transport& transport, const std::vector<std::string>& schemes) {
    auto is_registry = [](const Response& r) { return r.status == 200 || r.status == 401; };
    auto context = [&](const std::string& scheme) { return "GET " + scheme + "://" + endpoint_.authority + "/v2/"; };
    auto not_registry = [&](const Response& r) {
        return Error(context(schemes[0]) + ": " + describe_http_error(r) + ": not a registry API endpoint");
    };
    std::optional<Response> first;
    std::exception_ptr first_error;
    for (std::size_t i = 0; i < schemes.size(); ++i) {
        const bool last = i + 1 == schemes.size();
        try {
            Response r = probe(transport, schemes[i]);
            if (is_registry(r)) return r;
            if (last && !first) throw Error(describe_http_error(r) + ": not a registry API endpoint");
            if (!first) first = r;
        } catch (TransportError& e) {
            if (e.kind() == TransportError::Kind::Cancelled) throw;
            if (i == 0 && !last) {
                // Connection refused answers both schemes the same way.
                if (e.kind() == TransportError::Kind::Unreachable || e.kind() == TransportError::Kind::Permanent) {
                    e.add_context(context(schemes[i]));
                    throw;
                }
                first_error = std::current_exception();
                continue;
            }
            // The second scheme could not even set up TLS: report what the first one said.
            if (e.kind() == TransportError::Kind::TlsHandshake && (first || first_error)) {
                if (first) throw not_registry(*first);
                std::rethrow_exception(first_error);
            }
            e.add_context(context(schemes[i]));
            throw;
        }
    }
    if (first) throw not_registry(*first);
    if (first_error) std::rethrow_exception(first_error);
    throw Error(context(scheme_) + ": no answer");
}

// Starts with credentials right away, as the registry's challenge asks, so the first real
// request is not a wasted 401.
void RegistryClient::start_auth(Transport& transport, const Response& challenge) {
    std::lock_guard lock(mutex_);
    std::vector<Challenge> challenges;
    for (const auto& value : challenge.all("www-authenticate"))
        for (auto& c : parse_www_authenticate(value)) challenges.push_back(std::move(c));
    for (const auto& c : challenges) {
        if (c.scheme == "bearer" && !repository_.empty()) {
            auth_ = "Bearer " + fetch_token(transport, c);
            return;
        }
        if (c.scheme == "basic" && credentials_) {
            auth_ = "Basic " + base64_encode(credentials_->username + ":" + credentials_->password);
            return;
        }
    }
}

void RegistryClient::ping(Transport& transport) {
    const Response found = find_registry(transport, ping_schemes(endpoint_, options_.tls_verify));
    if (options_.debug) options_.debug("registry " + endpoint_.authority + " speaks " + scheme_);
    if (found.status == 200) return;  // anonymous access
    start_auth(transport, found);
}

void RegistryClient::verify_login(Transport& transport) {
    ping(transport);
    Request request;
    request.url = "/v2/";
    Response r = send(transport, request);
    if (r.status != 200) throw Error("GET " + base_url() + "/v2/: " + describe_http_error(r));
}

}  // namespace aishell::registry
