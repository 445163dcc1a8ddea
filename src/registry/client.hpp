// RegistryClient: one registry endpoint as the distribution API sees it. It finds the scheme
// (HTTPS; plain HTTP only for loopback registries or with --tls-verify=false), runs the auth
// flow (anonymous, Basic, Bearer tokens from WWW-Authenticate challenges), follows redirects
// itself so credentials never go to another origin (scheme, host, port) and HTTPS is never
// downgraded to plain HTTP towards a remote host, and retries transient failures with
// exponential backoff, honouring Retry-After on 429/503. Methods take the Transport to use so
// each worker thread sends over its own reused connection; the auth state is shared.
#pragma once

#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "registry/auth.hpp"
#include "registry/http.hpp"

namespace aishell::registry {

using DebugLog = std::function<void(std::string_view)>;

struct RetryPolicy {
    int max_attempts = 4;  // consecutive attempts that made no progress
    std::chrono::milliseconds base_delay{500};
    std::chrono::milliseconds max_delay{8000};
    std::chrono::seconds max_retry_after{60};  // a larger Retry-After is cut to this
};

struct ClientOptions {
    bool tls_verify = true;
    // The actions a Bearer token is asked for when the registry's challenge names no scope
    // (its /v2/ challenge): "pull", or "pull,push" for a push.
    std::string actions = "pull";
    RetryPolicy retry;
    DebugLog debug;                             // --debug; null when off
    std::function<bool()> cancelled;  // polled: stops waits and retries when true
    // Sleeps between retries (tests replace it). Returns early when cancel becomes true.
    std::function<void(std::chrono::milliseconds)> sleep;
};

// Retry-After: delta-seconds or an HTTP-date (RFC 9110 10.2.3); nullopt when unparsable.
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value, std::time_t now);
// The wait before retry number `attempt` (1-based): base * 2^(attempt-1), capped.
std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int attempt);
// "HTTP 404 not found (manifest unknown: ...)" from a response, using the registry's error body.
std::string describe_http_error(const Response& response);

// Where to talk to: host[:port], and a scheme when the user named one (a mirror URL).
struct Endpoint {
    std::string authority;
    std::optional<std::string> scheme;
    // Parses "host:port" or "https://host:port[/]".
    static Endpoint parse(std::string_view text);
};

class RegistryClient {
public:
    // registry: the name credentials are stored under ("docker.io", "127.0.0.1:5000");
    // repository: the path whose scope (options.actions) to ask for (empty for login).
    RegistryClient(Endpoint endpoint, std::string registry, std::string repository,
                   std::optional<Credentials> credentials, ClientOptions options);

    // GET /v2/: picks the scheme and learns the auth challenge; with credentials and a Bearer
    // challenge, fetches the token. Throws when the registry cannot be reached or refuses.
    void ping(Transport& transport);
    // Verifies credentials (for `aishell login`): ping, then /v2/ authorized.
    void verify_login(Transport& transport);

    // Sends GET/HEAD to path ("/v2/<repo>/manifests/<ref>") with auth, redirects and retries.
    // prepare runs before every attempt (e.g. to set a Range header). Returns the final
    // response, which may be an error status other than 401/429/5xx-after-retries.
    Response send(Transport& transport, Request request,
                  const std::function<void(Request&)>& prepare = nullptr);

    const std::string& registry() const noexcept { return registry_; }
    std::string base_url() const;
    const ClientOptions& options() const noexcept { return options_; }
    // Sleeps (interruptibly) and throws "interrupted" when cancelled.
    void wait(std::chrono::milliseconds delay) const;
    void check_cancelled() const;
    // Throws when a redirect from `from` to `to` goes from HTTPS to plain HTTP (see client.cpp);
    // the push applies it to the upload URLs a registry names too.
    void check_redirect(std::string_view from, std::string_view to) const;

private:
    Response send_once(Transport& transport, Request& request);
    Response send_with_retries(Transport& transport, Request request, bool with_auth,
                               const std::function<void(Request&)>& prepare);
    // Handles a 401: returns true when new credentials were obtained and the request should be
    // retried; `used` is the Authorization value the failed request carried.
    bool reauthorize(Transport& transport, const Response& response, const std::string& used);
    std::string fetch_token(Transport& transport, const Challenge& challenge);
    std::string current_auth() const;
    // One try of `request` at `url` (itself or where a redirect led), `prepare`d, with
    // credentials only for the origin they were meant for; `used` is the Authorization it carries.
    Request attempt_at(const Request& request, const std::string& url, bool with_auth,
                       const std::function<void(Request&)>& prepare, std::string& used) const;
    std::chrono::milliseconds retry_delay(const Response& response, int failures) const;
    void wait_to_retry(const std::string& url, std::chrono::milliseconds delay, const std::string& why) const;
    // ping's steps: the first of `schemes` that answers as a registry (200 or 401), and the
    // credentials its 401 asks for.
    Response find_registry(Transport& transport, const std::vector<std::string>& schemes);
    void start_auth(Transport& transport, const Response& challenge);
    Response probe(Transport& transport, const std::string& scheme);
    [[noreturn]] void throw_unauthorized(const Response& response, std::string_view what) const;

    Endpoint endpoint_;
    std::string registry_;
    std::string repository_;
    std::optional<Credentials> credentials_;
    ClientOptions options_;
    std::string scheme_ = "https";

    mutable std::mutex mutex_;  // guards auth_
    std::string auth_;          // the Authorization header value; empty for anonymous
};

}  // namespace aishell::registry
