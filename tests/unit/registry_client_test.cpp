// The registry client against a scripted fake transport: scheme choice, the Bearer and Basic
// flows, redirects that must not carry credentials, retries, Retry-After and error bodies.
#include <catch2/catch.hpp>

#include <deque>
#include <map>

#include "common/error.hpp"
#include "registry/auth.hpp"
#include "registry/client.hpp"

using namespace aishell::registry;
using namespace std::chrono_literals;

namespace {

// Answers requests from per-URL queues of scripted responses (the last one repeats) and
// records every request it was sent.
class FakeTransport final : public Transport {
public:
    void on(const std::string& method_url, Response r) { script_[method_url].push_back(std::move(r)); }
    void fail(const std::string& method_url, TransportError::Kind kind) {
        failures_[method_url].push_back(kind);
    }

    Response send(const Request& request) override {
        sent.push_back(request);
        std::string key = request.method + " " + request.url;
        if (auto f = failures_.find(key); f != failures_.end() && !f->second.empty()) {
            auto kind = f->second.front();
            f->second.pop_front();
            throw TransportError(kind, "scripted failure for " + key);
        }
        auto it = script_.find(key);
        if (it == script_.end()) {
            Response r;
            r.status = 404;
            return r;
        }
        Response r = it->second.front();
        if (it->second.size() > 1) it->second.pop_front();
        if (r.status >= 200 && r.status < 300 && request.sink) {
            request.sink(r.body);
            r.body.clear();
        }
        return r;
    }

    std::vector<Request> sent;

private:
    std::map<std::string, std::deque<Response>> script_;
    std::map<std::string, std::deque<TransportError::Kind>> failures_;
};

Response reply(int status, std::string body = {}, Headers headers = {}) {
    Response r;
    r.status = status;
    r.body = std::move(body);
    r.headers = std::move(headers);
    return r;
}

std::optional<std::string> header_of(const Request& r, const std::string& name) {
    for (const auto& [n, v] : r.headers) {
        std::string lower = n;
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lower == name) return v;
    }
    return std::nullopt;
}

struct Recorder {
    std::vector<std::chrono::milliseconds> sleeps;
    ClientOptions options() {
        ClientOptions o;
        o.sleep = [this](std::chrono::milliseconds d) { sleeps.push_back(d); };
        return o;
    }
};

const std::string kBase = "http://127.0.0.1:5000";

}  // namespace

TEST_CASE("client: a loopback registry is tried over plain HTTP first", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/", reply(200, "{}"));
    Recorder rec;
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "lib/app", std::nullopt,
                          rec.options());
    client.ping(t);
    CHECK(client.base_url() == kBase);
    REQUIRE(t.sent.size() == 1);
    CHECK_FALSE(header_of(t.sent[0], "authorization"));
}

TEST_CASE("client: plain HTTP to a remote registry is refused unless TLS verification is off", "[client]") {
    FakeTransport t;
    Recorder rec;
    RegistryClient client(Endpoint::parse("http://registry.example"), "registry.example", "lib/app",
                          std::nullopt, rec.options());
    CHECK_THROWS_WITH(client.ping(t), Catch::Contains("refusing plain HTTP"));
    CHECK(t.sent.empty());
}

TEST_CASE("client: the Bearer flow asks the realm for the repository's pull scope, with credentials", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/",
         reply(401, "", {{"www-authenticate", R"(Bearer realm="http://127.0.0.1:5001/token",service="svc")"}}));
    t.on("GET http://127.0.0.1:5001/token?service=svc&scope=repository%3Alib%2Fapp%3Apull&account=alice",
         reply(200, R"({"token":"TOKEN-1"})"));
    t.on("GET " + kBase + "/v2/lib/app/manifests/1", reply(200, "manifest"));
    Recorder rec;
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "lib/app",
                          Credentials{"alice", "pw"}, rec.options());
    client.ping(t);
    Request req;
    req.url = "/v2/lib/app/manifests/1";
    Response r = client.send(t, req);
    CHECK(r.status == 200);
    CHECK(r.body == "manifest");
    REQUIRE(t.sent.size() == 3);
    CHECK(header_of(t.sent[1], "authorization") == "Basic " + base64_encode("alice:pw"));
    CHECK(header_of(t.sent[2], "authorization") == std::optional<std::string>("Bearer TOKEN-1"));
}

TEST_CASE("client: a 401 with a new scope fetches a new token once, then gives up with a hint", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/", reply(200, "{}"));
    Headers challenge{{"www-authenticate",
                       R"(Bearer realm="http://127.0.0.1:5001/token",service="svc",scope="repository:lib/app:pull")"}};
    t.on("GET " + kBase + "/v2/lib/app/manifests/1", reply(401, R"({"errors":[{"code":"UNAUTHORIZED"}]})", challenge));
    t.on("GET http://127.0.0.1:5001/token?service=svc&scope=repository%3Alib%2Fapp%3Apull", reply(200, R"({"access_token":"T2"})"));
    Recorder rec;
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "lib/app", std::nullopt,
                          rec.options());
    client.ping(t);
    Request req;
    req.url = "/v2/lib/app/manifests/1";
    try {
        client.send(t, req);
        FAIL("no error");
    } catch (const aishell::Error& e) {
        CHECK_THAT(e.message(), Catch::Contains("401"));
        CHECK_THAT(e.hint(), Catch::Contains("aishell login 127.0.0.1:5000"));
    }
    // ping, the request, the token, the request again with the token: then it stops.
    REQUIRE(t.sent.size() == 4);
    CHECK(header_of(t.sent[3], "authorization") == std::optional<std::string>("Bearer T2"));
}

TEST_CASE("client: Basic credentials go to the registry but not across a redirect to another host", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/", reply(401, "", {{"www-authenticate", R"(Basic realm="r")"}}));
    t.on("GET " + kBase + "/v2/lib/app/blobs/sha256:aa",
         reply(307, "", {{"location", "http://127.0.0.2:9000/storage/aa?sig=1"}}));
    t.on("GET http://127.0.0.2:9000/storage/aa?sig=1", reply(200, "blob"));
    Recorder rec;
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "lib/app",
                          Credentials{"bob", "secret"}, rec.options());
    client.ping(t);
    Request req;
    req.url = "/v2/lib/app/blobs/sha256:aa";
    std::string got;
    req.sink = [&](std::string_view d) { got += d; };
    Response r = client.send(t, req);
    CHECK(r.status == 200);
    CHECK(got == "blob");
    REQUIRE(t.sent.size() == 3);
    CHECK(header_of(t.sent[1], "authorization") == "Basic " + base64_encode("bob:secret"));
    CHECK_FALSE(header_of(t.sent[2], "authorization"));
}

namespace {

// A Basic-auth registry at `endpoint` whose blob aa answers 307 to `location`, where the blob is.
struct RedirectingRegistry {
    FakeTransport t;
    Recorder rec;
    RegistryClient client;
    RedirectingRegistry(const std::string& endpoint, const std::string& location, bool tls_verify = true)
        : client(Endpoint::parse(endpoint), endpoint, "lib/app", Credentials{"bob", "secret"}, options(tls_verify)) {
        const std::string base = "https://" + Endpoint::parse(endpoint).authority;
        t.on("GET " + base + "/v2/", reply(401, "", {{"www-authenticate", R"(Basic realm="r")"}}));
        t.on("GET " + base + "/v2/lib/app/blobs/sha256:aa", reply(307, "", {{"location", location}}));
        t.on("GET " + location, reply(200, "blob"));
        client.ping(t);
    }
    ClientOptions options(bool tls_verify) {
        ClientOptions o = rec.options();
        o.tls_verify = tls_verify;
        return o;
    }
    Response get_blob() {
        Request req;
        req.url = "/v2/lib/app/blobs/sha256:aa";
        return client.send(t, req);
    }
};

}  // namespace

TEST_CASE("client: a URL's origin is its scheme, host and port, default ports made explicit", "[client]") {
    CHECK(url_origin("https://reg/v2/") == "https://reg:443");
    CHECK(url_origin("HTTPS://Reg.Example:443") == "https://reg.example:443");
    CHECK(url_origin("http://reg/v2/x?y=1") == "http://reg:80");
    CHECK(url_origin("http://reg:0080/") == "http://reg:80");
    CHECK(url_origin("https://user:pw@reg:5000/v2/") == "https://reg:5000");
    CHECK(url_origin("https://[::1]/v2/") == "https://[::1]:443");
    CHECK(url_origin("http://[::1]:5000") == "http://[::1]:5000");
    // https://reg and http://reg share their authority ("reg") but not their origin.
    CHECK(url_origin("https://reg/v2/") != url_origin("http://reg/v2/"));
    CHECK(url_origin("reg/v2/").empty());
    CHECK(url_origin("https://reg:x/").empty());
    CHECK(url_origin("https://[::1/").empty());
}

TEST_CASE("client: credentials do not follow a redirect from https to http on the same host", "[client]") {
    // Loopback: the downgrade itself is allowed (the bytes stay on the machine), the
    // credentials are not sent. Same authority "127.0.0.1" on both sides (default ports).
    RedirectingRegistry reg("https://127.0.0.1", "http://127.0.0.1/v2/lib/app/blobs/sha256:aa?cdn=1");
    Response r = reg.get_blob();
    CHECK(r.status == 200);
    REQUIRE(reg.t.sent.size() == 3);
    CHECK(header_of(reg.t.sent[1], "authorization") == "Basic " + base64_encode("bob:secret"));
    CHECK(reg.t.sent[2].url == "http://127.0.0.1/v2/lib/app/blobs/sha256:aa?cdn=1");
    CHECK_FALSE(header_of(reg.t.sent[2], "authorization"));
}

TEST_CASE("client: credentials do not follow a redirect to another port or scheme of the same host", "[client]") {
    for (const std::string location : {"https://127.0.0.1:8443/blob", "http://127.0.0.1:443/blob"}) {
        RedirectingRegistry reg("https://127.0.0.1", location);
        CHECK(reg.get_blob().status == 200);
        REQUIRE(reg.t.sent.size() == 3);
        CHECK_FALSE(header_of(reg.t.sent[2], "authorization"));
    }
}

TEST_CASE("client: credentials follow a redirect within the same origin", "[client]") {
    RedirectingRegistry reg("https://127.0.0.1", "https://127.0.0.1:443/v2/lib/app/blobs/sha256:aa?moved=1");
    CHECK(reg.get_blob().status == 200);
    REQUIRE(reg.t.sent.size() == 3);
    CHECK(header_of(reg.t.sent[2], "authorization") == "Basic " + base64_encode("bob:secret"));
}

TEST_CASE("client: a redirect from https to plain http on a remote host is refused", "[client]") {
    RedirectingRegistry reg("https://registry.example", "http://registry.example/v2/lib/app/blobs/sha256:aa?sig=s3cr3t");
    try {
        reg.get_blob();
        FAIL("no error");
    } catch (const aishell::Error& e) {
        CHECK(e.message() ==
              "refusing a redirect from https://registry.example/v2/lib/app/blobs/sha256:aa to plain HTTP "
              "http://registry.example/v2/lib/app/blobs/sha256:aa?sig=<redacted>");
        CHECK_THAT(e.hint(), Catch::Contains("--tls-verify=false"));
    }
    CHECK(reg.t.sent.size() == 2);  // the ping and the request: nothing went to the http URL
}

TEST_CASE("client: a loopback registry may redirect to plain http elsewhere, without credentials", "[client]") {
    RedirectingRegistry reg("https://127.0.0.1:5000", "http://cache.example/aa");
    CHECK(reg.get_blob().status == 200);
    REQUIRE(reg.t.sent.size() == 3);
    CHECK(header_of(reg.t.sent[1], "authorization") == "Basic " + base64_encode("bob:secret"));
    CHECK_FALSE(header_of(reg.t.sent[2], "authorization"));
}

TEST_CASE("client: with --tls-verify=false a redirect to http is followed, without credentials", "[client]") {
    RedirectingRegistry reg("https://registry.example", "http://registry.example/storage/aa", false);
    CHECK(reg.get_blob().status == 200);
    REQUIRE(reg.t.sent.size() == 3);
    CHECK(header_of(reg.t.sent[1], "authorization") == "Basic " + base64_encode("bob:secret"));
    CHECK_FALSE(header_of(reg.t.sent[2], "authorization"));
}

TEST_CASE("client: the token realm's credentials do not follow a redirect to plain http", "[client]") {
    const std::string token_query = "?service=svc&scope=repository%3Alib%2Fapp%3Apull&account=alice";
    auto run = [&](bool tls_verify, FakeTransport& t) {
        t.on("GET https://registry.example/v2/",
             reply(401, "", {{"www-authenticate", R"(Bearer realm="https://auth.example/token",service="svc")"}}));
        t.on("GET https://auth.example/token" + token_query,
             reply(302, "", {{"location", "http://auth.example/token" + token_query}}));
        t.on("GET http://auth.example/token" + token_query, reply(200, R"({"token":"T"})"));
        Recorder rec;
        ClientOptions options = rec.options();
        options.tls_verify = tls_verify;
        RegistryClient client(Endpoint::parse("https://registry.example"), "registry.example", "lib/app",
                              Credentials{"alice", "pw"}, options);
        client.ping(t);
    };
    {
        FakeTransport t;
        CHECK_THROWS_WITH(run(true, t), Catch::StartsWith("refusing a redirect from https://auth.example/token"));
        REQUIRE(t.sent.size() == 2);  // /v2/, the realm over https: nothing over http
    }
    {
        FakeTransport t;
        run(false, t);
        REQUIRE(t.sent.size() == 3);
        CHECK(header_of(t.sent[1], "authorization") == "Basic " + base64_encode("alice:pw"));
        CHECK(t.sent[2].url == "http://auth.example/token" + token_query);
        CHECK_FALSE(header_of(t.sent[2], "authorization"));
    }
}

TEST_CASE("client: a redirect loop ends in an error", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/", reply(200, "{}"));
    t.on("GET " + kBase + "/v2/a/blobs/x", reply(302, "", {{"location", "/v2/a/blobs/x"}}));
    Recorder rec;
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "a", std::nullopt, rec.options());
    client.ping(t);
    Request req;
    req.url = "/v2/a/blobs/x";
    CHECK_THROWS_WITH(client.send(t, req), Catch::Contains("too many redirects"));
}

TEST_CASE("client: 429 and 503 honour Retry-After, other 5xx back off exponentially", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/", reply(200, "{}"));
    const std::string url = kBase + "/v2/a/manifests/1";
    t.on("GET " + url, reply(429, "", {{"retry-after", "7"}}));
    t.on("GET " + url, reply(503, "", {{"retry-after", "100000"}}));  // capped at max_retry_after
    t.on("GET " + url, reply(502));
    t.on("GET " + url, reply(200, "ok"));
    Recorder rec;
    ClientOptions options = rec.options();
    options.retry.max_attempts = 5;
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "a", std::nullopt, options);
    client.ping(t);
    Request req;
    req.url = "/v2/a/manifests/1";
    Response r = client.send(t, req);
    CHECK(r.status == 200);
    REQUIRE(rec.sleeps.size() == 3);
    CHECK(rec.sleeps[0] == 7000ms);
    CHECK(rec.sleeps[1] == 60000ms);
    CHECK(rec.sleeps[2] == 2000ms);  // third failure: 500 ms * 2^2
}

TEST_CASE("client: retries stop after max_attempts and return the last answer", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/", reply(200, "{}"));
    t.on("GET " + kBase + "/v2/a/manifests/1", reply(500, R"({"errors":[{"code":"UNKNOWN","message":"boom"}]})"));
    Recorder rec;
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "a", std::nullopt, rec.options());
    client.ping(t);
    Request req;
    req.url = "/v2/a/manifests/1";
    Response r = client.send(t, req);
    CHECK(r.status == 500);
    CHECK(rec.sleeps.size() == 3);  // 4 attempts
    CHECK(describe_http_error(r) == "HTTP 500 internal server error (boom)");
}

TEST_CASE("client: a cut connection is retried, a TLS failure is not", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/", reply(200, "{}"));
    const std::string url = kBase + "/v2/a/blobs/b";
    t.fail("GET " + url, TransportError::Kind::Transient);
    t.on("GET " + url, reply(200, "blob"));
    Recorder rec;
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "a", std::nullopt, rec.options());
    client.ping(t);
    Request req;
    req.url = "/v2/a/blobs/b";
    CHECK(client.send(t, req).status == 200);
    CHECK(rec.sleeps.size() == 1);

    t.fail("GET " + url, TransportError::Kind::Permanent);
    CHECK_THROWS_AS(client.send(t, req), TransportError);
    CHECK(rec.sleeps.size() == 1);
}

TEST_CASE("client: cancellation stops waits and requests", "[client]") {
    FakeTransport t;
    t.on("GET " + kBase + "/v2/", reply(200, "{}"));
    t.on("GET " + kBase + "/v2/a/manifests/1", reply(503));
    bool cancelled = false;
    ClientOptions options;
    options.cancelled = [&] { return cancelled; };
    options.sleep = [&](std::chrono::milliseconds) { cancelled = true; };  // Ctrl-C during the wait
    RegistryClient client(Endpoint::parse("127.0.0.1:5000"), "127.0.0.1:5000", "a", std::nullopt, options);
    client.ping(t);
    Request req;
    req.url = "/v2/a/manifests/1";
    CHECK_THROWS_WITH(client.send(t, req), Catch::Contains("interrupted"));
}

TEST_CASE("client: Retry-After as seconds or an HTTP date", "[client]") {
    std::time_t now = 1700000000;  // Tue, 14 Nov 2023 22:13:20 GMT
    CHECK(parse_retry_after("120", now) == std::optional<std::chrono::seconds>(120s));
    CHECK(parse_retry_after(" 5 ", now) == std::optional<std::chrono::seconds>(5s));
    CHECK(parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now) == std::optional<std::chrono::seconds>(60s));
    CHECK(parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == std::optional<std::chrono::seconds>(0s));
    CHECK_FALSE(parse_retry_after("soon", now));
    CHECK_FALSE(parse_retry_after("", now));
    RetryPolicy policy;
    CHECK(backoff_delay(policy, 1) == 500ms);
    CHECK(backoff_delay(policy, 2) == 1000ms);
    CHECK(backoff_delay(policy, 10) == 8000ms);
}
