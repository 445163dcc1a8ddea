// ADD's remote sources (see build_fetch.hpp).
#include "composer/build_fetch.hpp"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <utility>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kUnnamed = "__unnamed__";

bool starts_with_ci(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
    return true;
}

// The URL's path: after the authority, before '?' or '#' (still percent-encoded).
std::string_view raw_url_path(std::string_view url) {
    auto sep = url.find("://");
    if (sep == std::string_view::npos) return {};
    std::string_view rest = url.substr(sep + 3);
    auto slash = rest.find_first_of("/?#");
    if (slash == std::string_view::npos || rest[slash] != '/') return {};
    rest = rest.substr(slash);
    return rest.substr(0, rest.find_first_of("?#"));
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Percent-decoding as Go's url.PathUnescape; nullopt for a malformed escape (url.Parse fails).
std::optional<std::string> percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size()) return std::nullopt;
        int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

// A URL as error messages show it: a password in the authority replaced (BuildKit's
// urlutil.RedactCredentials), secret-looking query values too (registry::redact_url).
std::string shown_url(const std::string& url) {
    std::string out = registry::redact_url(url);
    auto sep = out.find("://");
    if (sep == std::string::npos) return out;
    auto end = out.find_first_of("/?#", sep + 3);
    auto at = out.rfind('@', end == std::string::npos ? std::string::npos : end);
    if (at == std::string::npos || at < sep + 3) return out;
    auto colon = out.find(':', sep + 3);
    if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "xxxxx");
    return out;
}

std::string reason_phrase(int status) {
    switch (status) {
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 410: return "Gone";
        case 429: return "Too Many Requests";
        case 500: return "Internal Server Error";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        default: return {};
    }
}

bool is_redirect(int status) {
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// fnmatch(3) escapes: the copy matches source components with wildcards (build_copy.hpp), and a
// downloaded file's name is literal.
std::string glob_escape(const std::string& name) {
    std::string out;
    for (char c : name) {
        if (c == '*' || c == '?' || c == '[' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

int month_index(std::string_view m) {
    static constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (std::size_t i = 0; i < kMonths.size(); ++i)
        if (kMonths[i] == m) return static_cast<int>(i);
    return -1;
}

std::optional<std::int64_t> to_epoch(int year, int month, int day, int h, int m, int s) {
    if (month < 0 || day < 1 || day > 31 || h > 23 || m > 59 || s > 60 || year < 1970) return std::nullopt;
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    return static_cast<std::int64_t>(::timegm(&tm));
}

// Sends one request; a network failure becomes an Error with a hint that fits ADD (a
// cancelled transfer stays a TransportError: UrlSources turns it into Interrupted).
registry::Response send_one(registry::Transport& transport, const registry::Request& request,
                            const std::string& authority) {
    try {
        return transport.send(request);
    } catch (const registry::TransportError& e) {
        if (e.kind() == registry::TransportError::Kind::Cancelled) throw;
        std::string hint;
        if (e.hint().find("ca.crt") != std::string::npos)
            hint = "put the server's CA certificate in ~/.aishell/certs.d/" + authority + "/ca.crt";
        else if (e.kind() == registry::TransportError::Kind::Unreachable)
            hint = "check that the server is up and the URL is right";
        else if (e.hint().find("registry") != std::string::npos)  // the transport speaks of registries
            hint = "check the host name in the URL and your network";
        else
            hint = e.hint();
        throw Error(e.message(), hint);
    }
}

[[noreturn]] void throw_interrupted(const std::string& what, int sig) {
    const char* name = ::sigabbrev_np(sig);
    throw Interrupted(what + ": interrupted by " + (name ? std::string("SIG") + name : std::to_string(sig)),
                      "the build stopped; nothing was tagged and the store is as it was", sig);
}

}  // namespace

bool is_git_source(std::string_view s) {
    if (starts_with_ci(s, "git://") || starts_with_ci(s, "ssh://")) return true;
    // scp-like SSH (sshutil.IsImplicitSSHTransport): user@host:path
    auto at = s.find('@');
    if (at != std::string_view::npos && at > 0) {
        std::string_view user = s.substr(0, at), rest = s.substr(at + 1);
        auto colon = rest.find(':');
        auto valid_user = user.find_first_not_of(
                              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == std::string_view::npos;
        auto host = rest.substr(0, colon);
        auto valid_host = !host.empty() && host.find_first_not_of(
                                               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
                                               std::string_view::npos;
        if (colon != std::string_view::npos && valid_user && valid_host) return true;
    }
    if (s.starts_with("http://") || s.starts_with("https://")) return raw_url_path(s).ends_with(".git");
    return false;
}

bool is_http_source(std::string_view s) {
    return (s.starts_with("http://") || s.starts_with("https://")) && !is_git_source(s);
}

std::string url_file_name(std::string_view url) {
    auto path = percent_decode(raw_url_path(url));
    if (!path) return std::string(kUnnamed);
    std::string p = *path;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    std::string base = p.substr(p.rfind('/') == std::string::npos ? 0 : p.rfind('/') + 1);
    if (base.empty() || base == "." || base == ".." || base.find('\0') != std::string::npos)
        return std::string(kUnnamed);
    return base;
}

std::optional<std::int64_t> parse_http_date(std::string_view text) {
    std::string t(text);
    char wday[16] = {}, mon[4] = {}, tz[4] = {};
    int day = 0, year = 0, h = 0, m = 0, s = 0, used = 0;
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    if (std::sscanf(t.c_str(), "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d %3s%n", wday, &day, mon, &year, &h, &m, &s,
                    tz, &used) == 8 &&
        static_cast<std::size_t>(used) == t.size() && std::string_view(tz) == "GMT")
        return to_epoch(year, month_index(mon), day, h, m, s);
    // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit years are 19xx, as Go reads them)
    if (std::sscanf(t.c_str(), "%15[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d %3s%n", wday, &day, mon, &year, &h, &m,
                    &s, tz, &used) == 8 &&
        static_cast<std::size_t>(used) == t.size() && std::string_view(tz) == "GMT")
        return to_epoch(year + (year < 69 ? 2000 : 1900), month_index(mon), day, h, m, s);
    // asctime: Sun Nov  6 08:49:37 1994
    if (std::sscanf(t.c_str(), "%3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", wday, mon, &day, &h, &m, &s, &year,
                    &used) == 7 &&
        static_cast<std::size_t>(used) == t.size())
        return to_epoch(year, month_index(mon), day, h, m, s);
    return std::nullopt;
}

oci::Digest parse_add_checksum(const std::string& text) {
    auto d = oci::Digest::try_parse(text);
    if (!d || !d->is_sha256())
        throw Error("ADD --checksum=" + text + ": not a sha256 digest",
                    "write --checksum=sha256:<64 hex digits> (sha256sum FILE gives them)");
    return *d;
}

FetchedFile fetch_url(registry::Transport& transport, const std::string& url, const fs::path& file,
                      const FetchOptions& options) {
    return with_context("download " + shown_url(url), [&] {
        UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) throw_errno("create", file.string());
        // BuildKit writes the download 0600 whatever the umask; the copy keeps the mode.
        if (::fchmod(fd.get(), 0600) != 0) throw_errno("chmod", file.string());
        oci::Sha256 sha;
        const std::string limit = std::to_string(options.max_bytes);
        registry::Request request;
        request.on_head = [&](const registry::Response& r) {
            auto length = r.header("content-length");
            if (length && length->find_first_not_of("0123456789") == std::string::npos && length->size() < 20 &&
                std::stoull(*length) > options.max_bytes)
                throw Error("the file is " + *length + " bytes, over the " + limit + " bytes limit of ADD downloads");
        };
        request.sink = [&](std::string_view chunk) {
            if (sha.bytes() + chunk.size() > options.max_bytes)
                throw Error("the file is larger than the " + limit + " bytes limit of ADD downloads");
            write_all(fd.get(), chunk, file.string());
            sha.update(chunk);
        };
        std::string current = url;
        registry::Response response;
        for (int hops = 0;; ++hops) {
            request.url = current;
            auto parts = registry::split_url(current);
            if (!parts || (parts->scheme != "http" && parts->scheme != "https"))
                throw Error("not an http(s) URL: " + shown_url(current));
            response = send_one(transport, request, parts->authority);
            if (!is_redirect(response.status)) break;
            auto location = response.header("location");
            if (!location || location->empty())
                throw Error("HTTP " + std::to_string(response.status) + " without a Location header");
            if (hops >= options.max_redirects)
                throw Error("stopped after " + std::to_string(options.max_redirects) + " redirects");
            current = registry::resolve_url(current, *location);
        }
        if (response.status < 200 || response.status >= 300) {
            std::string reason = reason_phrase(response.status);
            throw Error("HTTP " + std::to_string(response.status) + (reason.empty() ? "" : " " + reason),
                        response.status == 404 ? "check the URL" : "");
        }
        FetchedFile out;
        out.size = sha.bytes();
        out.digest = sha.finish();
        if (options.checksum && out.digest != *options.checksum)
            throw Error("checksum mismatch: --checksum says " + options.checksum->str() + ", the download is " +
                            out.digest.str(),
                        "the file at the URL changed, or the --checksum value is wrong");
        if (auto lm = response.header("last-modified")) out.last_modified = parse_http_date(*lm);
        // mtime: Last-Modified, else the epoch (BuildKit's httpSourceHandler.save).
        struct timespec times[2] = {{out.last_modified.value_or(0), 0}, {out.last_modified.value_or(0), 0}};
        if (::futimens(fd.get(), times) != 0) throw_errno("set mtime", file.string());
        return out;
    });
}

UrlSources::UrlSources(std::vector<std::string> urls, std::optional<oci::Digest> checksum, fs::path dir,
                       registry::TransportFactory transports, std::shared_ptr<StopState> stop)
    : urls_(std::move(urls)),
      checksum_(std::move(checksum)),
      dir_(std::move(dir)),
      transports_(std::move(transports)),
      stop_(stop ? std::move(stop) : std::make_shared<StopState>()) {
    make_dirs(dir_, 0700);
}

UrlSources::UrlSources(UrlSources&& other) noexcept
    : urls_(std::move(other.urls_)),
      checksum_(std::move(other.checksum_)),
      dir_(std::exchange(other.dir_, fs::path())),
      transports_(std::move(other.transports_)),
      stop_(std::move(other.stop_)),
      fetched_(std::move(other.fetched_)) {}

UrlSources::~UrlSources() {
    if (dir_.empty()) return;
    std::error_code ec;
    fs::remove_all(dir_, ec);  // only the parent's own downloads are in there
}

void UrlSources::fetch_all() {
    if (fetched_.size() == urls_.size()) return;
    // Ctrl-C must not kill the process with its temp files and half-made store changes around:
    // the transfer polls for the stop signals and stops, and the build unwinds as Interrupted.
    HeldSignals poll;
    stop_->poll = &poll;
    stop_->signal = 0;
    struct Detach {
        StopState& s;
        ~Detach() { s.poll = nullptr; }
    } detach{*stop_};
    std::unique_ptr<registry::Transport> transport = transports_();
    fetched_.clear();
    for (std::size_t i = 0; i < urls_.size(); ++i) {
        fs::path sub = dir_ / std::to_string(i);
        fs::remove_all(sub);
        make_dirs(sub, 0700);
        try {
            fetched_.push_back(fetch_url(*transport, urls_[i], sub / url_file_name(urls_[i]), FetchOptions{checksum_}));
        } catch (const registry::TransportError& e) {
            if (e.kind() == registry::TransportError::Kind::Cancelled && stop_->signal)
                throw_interrupted("download " + shown_url(urls_[i]), stop_->signal);
            throw;
        }
        if (int sig = poll.take()) throw_interrupted("download " + shown_url(urls_[i]), sig);
    }
}

bool UrlSources::StopState::stop_requested() {
    if (!signal && poll) signal = poll->take();
    return signal != 0;
}

std::vector<std::string> UrlSources::key_parts() {
    std::vector<std::string> parts;
    if (!checksum_) fetch_all();
    for (std::size_t i = 0; i < urls_.size(); ++i) {
        parts.push_back("url=" + urls_[i]);
        parts.push_back("name=" + url_file_name(urls_[i]));
        if (checksum_) {
            parts.push_back("checksum=" + checksum_->str());
        } else {
            parts.push_back("content=" + fetched_[i].digest.str());
            const auto& lm = fetched_[i].last_modified;
            parts.push_back("last-modified=" + (lm ? std::to_string(*lm) : std::string("none")));
        }
    }
    return parts;
}

std::vector<std::string> UrlSources::copy_sources() {
    fetch_all();
    std::vector<std::string> out;
    for (std::size_t i = 0; i < urls_.size(); ++i)
        out.push_back(std::to_string(i) + "/" + glob_escape(url_file_name(urls_[i])));
    return out;
}

std::optional<UrlSources> url_sources(const std::vector<std::string>& sources, const std::string& checksum,
                                      const fs::path& tmp_dir) {
    std::vector<std::string> urls;
    std::string local;  // the first source that is not a URL
    for (const auto& s : sources) {
        if (is_git_source(s))
            throw Error("ADD from a Git repository (" + shown_url(s) + ") is not supported by this build engine yet",
                        "clone the repository into the build context and COPY it");
        if (is_http_source(s)) urls.push_back(s);
        else if (local.empty()) local = s;
    }
    if (!checksum.empty()) {
        if (sources.size() > 1)
            throw Error("ADD --checksum can't be specified for multiple sources",
                        "give each URL its own ADD --checksum=... instruction");
        if (urls.empty())
            throw Error("ADD --checksum can't be specified for non-HTTP(S) sources: " + local,
                        "--checksum verifies a downloaded file; remove it for local sources");
    }
    if (urls.empty()) return std::nullopt;
    if (!local.empty())
        throw Error("ADD mixes URLs and local sources (" + local + ")",
                    "use one ADD for the URLs and another for the local files");
    std::optional<oci::Digest> sum;
    if (!checksum.empty()) sum = parse_add_checksum(checksum);
    // The transfer polls for a stop signal (UrlSources::fetch_all blocks them meanwhile).
    auto stop = std::make_shared<UrlSources::StopState>();
    auto transports = registry::curl_transport_factory(registry::TlsOptions{true, registry::default_certs_dir()},
                                                       [stop] { return stop->stop_requested(); });
    return std::optional<UrlSources>(std::in_place, std::move(urls), std::move(sum),
                                     tmp_dir / ("add-" + random_hex(12)), std::move(transports), std::move(stop));
}

}  // namespace aishell::composer
