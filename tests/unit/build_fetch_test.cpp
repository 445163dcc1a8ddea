// ADD's remote sources against a scripted transport: source classification as BuildKit's,
// file names, HTTP dates, redirects, statuses, the size cap, --checksum, the file's mode and
// mtime, and the cache key parts (a download per build without --checksum, none with it).
#include <signal.h>
#include <sys/stat.h>

#include <deque>
#include <filesystem>
#include <map>

#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "composer/build_fetch.hpp"
#include "temp_dir.hpp"

using namespace aishell;
using namespace aishell::composer;
using aishell::registry::Request;
using aishell::registry::Response;
using aishell::registry::TransportError;

namespace {

namespace fs = std::filesystem;

// Answers GETs from per-URL queues of scripted responses (the last one repeats); streams a 2xx
// body through the sink in small chunks, after on_head, as CurlTransport does.
class ScriptedTransport final : public registry::Transport {
public:
    explicit ScriptedTransport(int* sent = nullptr) : sent_(sent) {}
    void on(const std::string& url, Response r) { script_[url].push_back(std::move(r)); }
    void fail(const std::string& url, TransportError::Kind kind, std::string hint = {}) {
        failures_[url] = {kind, std::move(hint)};
    }

    Response send(const Request& request) override {
        if (sent_) ++*sent_;
        urls.push_back(request.url);
        if (auto f = failures_.find(request.url); f != failures_.end())
            throw TransportError(f->second.first, "Couldn't connect to server", f->second.second);
        auto it = script_.find(request.url);
        if (it == script_.end()) return Response{404, {}, "not found"};
        Response r = it->second.front();
        if (it->second.size() > 1) it->second.pop_front();
        if (r.status >= 200 && r.status < 300 && request.sink) {
            if (!r.body.empty() && request.on_head) request.on_head(r);
            for (std::size_t i = 0; i < r.body.size(); i += 3) request.sink(std::string_view(r.body).substr(i, 3));
            r.body.clear();
        }
        return r;
    }

    std::vector<std::string> urls;

private:
    int* sent_;
    std::map<std::string, std::deque<Response>> script_;
    std::map<std::string, std::pair<TransportError::Kind, std::string>> failures_;
};

Response ok(std::string body, registry::Headers headers = {}) { return Response{200, std::move(headers), std::move(body)}; }

const std::string kHelloDigest = "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";  // "hello\n"

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.message();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("ADD sources: http(s) URLs and Git repositories as BuildKit tells them apart", "[build_fetch]") {
    CHECK(is_http_source("http://example.com/f.txt"));
    CHECK(is_http_source("https://example.com/dir/"));
    CHECK_FALSE(is_http_source("https://github.com/moby/buildkit.git"));
    CHECK_FALSE(is_http_source("https://github.com/moby/buildkit.git#v0.12"));
    CHECK_FALSE(is_http_source("ftp://example.com/f"));
    CHECK_FALSE(is_http_source("HTTP://example.com/f"));  // BuildKit's prefix test is case-sensitive
    CHECK_FALSE(is_http_source("file.txt"));
    CHECK(is_git_source("git@github.com:moby/buildkit.git"));
    CHECK(is_git_source("git://example.com/repo"));
    CHECK(is_git_source("ssh://git@example.com/repo"));
    CHECK(is_git_source("https://example.com/repo.git?x=1"));
    CHECK_FALSE(is_git_source("https://example.com/repo.git.tar"));
    CHECK_FALSE(is_git_source("dir/file@x.txt"));
    CHECK_FALSE(is_git_source("github.com/moby/buildkit"));  // indistinguishable from a local path
}

TEST_CASE("ADD URL file names: the last component of the decoded path, else __unnamed__", "[build_fetch]") {
    CHECK(url_file_name("http://h/a/b/tool.tar.gz") == "tool.tar.gz");
    CHECK(url_file_name("http://h/a/b/tool?version=2#frag") == "tool");
    CHECK(url_file_name("http://h/dir/") == "dir");
    CHECK(url_file_name("http://h/my%20file.txt") == "my file.txt");
    CHECK(url_file_name("http://h/a%2Fb") == "b");
    CHECK(url_file_name("http://h") == "__unnamed__");
    CHECK(url_file_name("http://h/") == "__unnamed__");
    CHECK(url_file_name("http://h?x=/y") == "__unnamed__");
    CHECK(url_file_name("http://h/a/..") == "__unnamed__");
    CHECK(url_file_name("http://h/bad%zzescape") == "__unnamed__");
    CHECK(url_file_name("http://user:pw@h:8080/x/f[1].txt") == "f[1].txt");
}

TEST_CASE("HTTP dates in the three formats Go's http.ParseTime reads", "[build_fetch]") {
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
    CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777);
    CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777);
    CHECK(parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT") == 1700000000);
    CHECK_FALSE(parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"));
    CHECK_FALSE(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"));
    CHECK_FALSE(parse_http_date("yesterday"));
    CHECK_FALSE(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT trailing"));
}

TEST_CASE("flag --checksum takes sha256 digests only", "[build_fetch]") {
    CHECK(parse_add_checksum(kHelloDigest).str() == kHelloDigest);
    CHECK_THROWS_WITH(parse_add_checksum("sha256:abc"), Catch::Contains("--checksum=sha256:abc: not a sha256 digest"));
    CHECK_THROWS_WITH(parse_add_checksum("md5:0123"), Catch::Contains("not a sha256 digest"));
}

TEST_CASE("fetch_url streams the body into a 0600 file with its digest and Last-Modified mtime", "[build_fetch]") {
    TempDir dir;
    ScriptedTransport t;
    t.on("http://h/f.txt", ok("hello\n", {{"last-modified", "Tue, 14 Nov 2023 22:13:20 GMT"}}));
    ::umask(022);
    FetchedFile f = fetch_url(t, "http://h/f.txt", dir.path / "f.txt");
    CHECK(f.digest.str() == kHelloDigest);
    CHECK(f.size == 6);
    CHECK(f.last_modified == 1700000000);
    CHECK(read_file(dir.path / "f.txt") == "hello\n");
    struct stat st {};
    REQUIRE(::stat((dir.path / "f.txt").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(st.st_mtime == 1700000000);

    SECTION("without Last-Modified the mtime is the epoch, as BuildKit sets it") {
        t.on("http://h/g", ok(""));
        FetchedFile g = fetch_url(t, "http://h/g", dir.path / "g");
        CHECK_FALSE(g.last_modified);
        CHECK(g.size == 0);
        REQUIRE(::stat((dir.path / "g").c_str(), &st) == 0);
        CHECK(st.st_mtime == 0);
    }
}

TEST_CASE("fetch_url follows redirects, at most max_redirects of them", "[build_fetch]") {
    TempDir dir;
    ScriptedTransport t;
    t.on("http://h/a", Response{301, {{"location", "/b"}}, ""});
    t.on("http://h/b", Response{307, {{"location", "https://other:8443/c"}}, ""});
    t.on("https://other:8443/c", ok("hello\n"));
    CHECK(fetch_url(t, "http://h/a", dir.path / "a").digest.str() == kHelloDigest);
    CHECK(t.urls == std::vector<std::string>{"http://h/a", "http://h/b", "https://other:8443/c"});

    t.on("http://h/loop", Response{302, {{"location", "/loop"}}, ""});
    CHECK(error_of([&] { fetch_url(t, "http://h/loop", dir.path / "loop", FetchOptions{std::nullopt, 100, 3}); }) ==
          "download http://h/loop: stopped after 3 redirects");
    t.on("http://h/nowhere", Response{302, {}, ""});
    CHECK(error_of([&] { fetch_url(t, "http://h/nowhere", dir.path / "nowhere"); }) ==
          "download http://h/nowhere: HTTP 302 without a Location header");
}

TEST_CASE("fetch_url errors name the URL: statuses, network failures, TLS", "[build_fetch]") {
    TempDir dir;
    ScriptedTransport t;
    CHECK(error_of([&] { fetch_url(t, "http://h/missing", dir.path / "m1"); }) ==
          "download http://h/missing: HTTP 404 Not Found");
    t.on("http://h/teapot", Response{418, {}, ""});
    CHECK(error_of([&] { fetch_url(t, "http://h/teapot", dir.path / "m2"); }) == "download http://h/teapot: HTTP 418");
    t.fail("http://h:1/x", TransportError::Kind::Unreachable);
    try {
        fetch_url(t, "http://h:1/x", dir.path / "m3");
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.message() == "download http://h:1/x: Couldn't connect to server");
        CHECK(e.hint() == "check that the server is up and the URL is right");
    }
    t.fail("https://h:2/x", TransportError::Kind::Permanent, "put the registry's CA certificate in ~/.aishell/certs.d/h:2/ca.crt");
    try {
        fetch_url(t, "https://h:2/x", dir.path / "m4");
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.hint() == "put the server's CA certificate in ~/.aishell/certs.d/h:2/ca.crt");
    }
    // A password in the URL is not shown.
    CHECK(error_of([&] { fetch_url(t, "http://bob:s3cret@h/missing", dir.path / "m5"); }) ==
          "download http://bob:xxxxx@h/missing: HTTP 404 Not Found");
}

TEST_CASE("fetch_url enforces the size cap, announced or streamed", "[build_fetch]") {
    TempDir dir;
    ScriptedTransport t;
    t.on("http://h/big", ok("0123456789", {{"content-length", "10"}}));
    CHECK(error_of([&] { fetch_url(t, "http://h/big", dir.path / "a", FetchOptions{std::nullopt, 9, 10}); }) ==
          "download http://h/big: the file is 10 bytes, over the 9 bytes limit of ADD downloads");
    t.on("http://h/chunked", ok("0123456789"));
    CHECK(error_of([&] { fetch_url(t, "http://h/chunked", dir.path / "b", FetchOptions{std::nullopt, 9, 10}); }) ==
          "download http://h/chunked: the file is larger than the 9 bytes limit of ADD downloads");
    CHECK(fetch_url(t, "http://h/chunked", dir.path / "c", FetchOptions{std::nullopt, 10, 10}).size == 10);
}

TEST_CASE("fetch_url verifies --checksum and names both digests on a mismatch", "[build_fetch]") {
    TempDir dir;
    ScriptedTransport t;
    t.on("http://h/f", ok("hello\n"));
    CHECK(fetch_url(t, "http://h/f", dir.path / "a", FetchOptions{oci::Digest::parse(kHelloDigest)}).size == 6);
    const std::string wrong = "sha256:" + std::string(64, '0');
    CHECK(error_of([&] { fetch_url(t, "http://h/f", dir.path / "b", FetchOptions{oci::Digest::parse(wrong)}); }) ==
          "download http://h/f: checksum mismatch: --checksum says " + wrong + ", the download is " + kHelloDigest);
}

TEST_CASE("UrlSources: key parts download per build without --checksum, never with it", "[build_fetch]") {
    TempDir tmp;
    int sent = 0;
    auto script = [&sent] {
        auto t = std::make_unique<ScriptedTransport>(&sent);
        t->on("http://h/v/tool[1].bin", ok("hello\n", {{"last-modified", "Tue, 14 Nov 2023 22:13:20 GMT"}}));
        return std::unique_ptr<registry::Transport>(std::move(t));
    };
    fs::path dir = tmp.path / "add-1";
    {
        UrlSources plain({"http://h/v/tool[1].bin"}, std::nullopt, dir, script);
        CHECK(fs::is_directory(dir));
        CHECK(plain.key_parts() == std::vector<std::string>{"url=http://h/v/tool[1].bin", "name=tool[1].bin",
                                                            "content=" + kHelloDigest, "last-modified=1700000000"});
        CHECK(sent == 1);
        CHECK(plain.copy_sources() == std::vector<std::string>{"0/tool\\[1].bin"});  // no second download
        CHECK(sent == 1);
        CHECK(read_file(dir / "0" / "tool[1].bin") == "hello\n");
    }
    CHECK_FALSE(fs::exists(dir));  // the downloads go with the object

    UrlSources pinned({"http://h/v/tool[1].bin"}, oci::Digest::parse(kHelloDigest), dir, script);
    CHECK(pinned.key_parts() ==
          std::vector<std::string>{"url=http://h/v/tool[1].bin", "name=tool[1].bin", "checksum=" + kHelloDigest});
    CHECK(sent == 1);  // a cache hit needs no download
    CHECK(pinned.copy_sources().size() == 1);
    CHECK(sent == 2);
}

TEST_CASE("url_sources refuses what BuildKit refuses or aishell does not fetch", "[build_fetch]") {
    TempDir tmp;
    CHECK_FALSE(url_sources({"a.txt", "<<EOF"}, "", tmp.path));
    CHECK(url_sources({"http://h/a"}, "", tmp.path).has_value());
    CHECK(error_of([&] { url_sources({"git@github.com:moby/buildkit.git"}, "", tmp.path); }) ==
          "ADD from a Git repository (git@github.com:moby/buildkit.git) is not supported by this build engine yet");
    CHECK(error_of([&] { url_sources({"http://h/a", "local.txt"}, "", tmp.path); }) ==
          "ADD mixes URLs and local sources (local.txt)");
    CHECK(error_of([&] { url_sources({"http://h/a", "http://h/b"}, kHelloDigest, tmp.path); }) ==
          "ADD --checksum can't be specified for multiple sources");
    CHECK(error_of([&] { url_sources({"local.txt"}, kHelloDigest, tmp.path); }) ==
          "ADD --checksum can't be specified for non-HTTP(S) sources: local.txt");
    CHECK(error_of([&] { url_sources({"http://h/a"}, "sha256:nope", tmp.path); }) ==
          "ADD --checksum=sha256:nope: not a sha256 digest");
    // Nothing is left behind by the refusals, and the accepted one cleaned up its dir.
    CHECK(fs::is_empty(tmp.path));
}

TEST_CASE("UrlSources: a stop signal during a download becomes Interrupted, the mask restored", "[build_fetch]") {
    TempDir tmp;
    auto stop = std::make_shared<UrlSources::StopState>();
    // A transport that gets SIGINT mid-transfer and asks, as CurlTransport's progress callback
    // does, whether to stop.
    class SignalledTransport final : public registry::Transport {
    public:
        explicit SignalledTransport(std::shared_ptr<UrlSources::StopState> s) : stop_(std::move(s)) {}
        Response send(const Request&) override {
            ::raise(SIGINT);  // blocked by fetch_all: pending, not delivered
            if (stop_->stop_requested()) throw TransportError(TransportError::Kind::Cancelled, "interrupted");
            return Response{200, {}, ""};
        }

    private:
        std::shared_ptr<UrlSources::StopState> stop_;
    };
    fs::path dir = tmp.path / "add-sig";
    {
        UrlSources sources({"http://h/f"}, std::nullopt, dir,
                           [stop]() -> std::unique_ptr<registry::Transport> {
                               return std::make_unique<SignalledTransport>(stop);
                           },
                           stop);
        try {
            sources.key_parts();
            FAIL("no error");
        } catch (const Interrupted& e) {
            CHECK(e.message() == "download http://h/f: interrupted by SIGINT");
            CHECK(e.exit_status() == 130);
        }
    }
    CHECK_FALSE(fs::exists(dir));
    sigset_t now, pending;
    ::pthread_sigmask(SIG_BLOCK, nullptr, &now);
    CHECK_FALSE(sigismember(&now, SIGINT));  // unblocked again ...
    ::sigpending(&pending);
    CHECK_FALSE(sigismember(&pending, SIGINT));  // ... and the signal was taken, not left to kill us
}
