// ADD's remote sources, fetched as BuildKit's http source does (source/http/source.go and
// dockerfile2llb's ADD): an http(s) URL is downloaded by the parent (the build's own process,
// with the project's libcurl transport: TLS verified, per-host CAs in
// ~/.aishell/certs.d/<host[:port]>/ca.crt), redirects followed (at most 10, as Go's client),
// streamed into a 0600 file under the store's tmp/ with a size cap and SHA-256 computed while
// it arrives. The file is named after the last component of the URL's path ("__unnamed__"
// when there is none); its mtime is the response's Last-Modified, else the Unix epoch. It is
// never extracted, even when it is an archive. `--checksum=sha256:...` is verified against
// the bytes received.
// The step cache key (UrlSources::key_parts): without --checksum the content's digest (so
// every build downloads, as BuildKit does), with it the checksum alone (a cache hit downloads
// nothing). The file step then copies the downloads like context files (build_copy.hpp):
// same destination rules, --chown/--chmod.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/held_signals.hpp"
#include "oci/digest.hpp"
#include "registry/http.hpp"

namespace aishell::composer {

// The most an ADD download may hold; more fails the step (BuildKit sets no limit; this one
// keeps a runaway or hostile server from filling the store's disk).
inline constexpr std::uint64_t kMaxAddUrlBytes = 8ULL << 30;

// BuildKit's isHTTPSource: the source starts with http:// or https:// (and is no Git URL).
bool is_http_source(std::string_view source);

// What BuildKit's gitutil.ParseGitRef takes for a Git repository: git@host:..., git://,
// ssh://, or an http(s) URL whose path ends in ".git".
bool is_git_source(std::string_view source);

// The name dockerfile2llb gives a URL's download: path.Base of the URL's decoded path (query
// and fragment dropped), or "__unnamed__" for an empty path, "/", "." or "..".
std::string url_file_name(std::string_view url);

// An HTTP date (IMF-fixdate, RFC 850 or asctime, as Go's http.ParseTime) in seconds since
// the epoch; nullopt when it is none of them.
std::optional<std::int64_t> parse_http_date(std::string_view text);

// --checksum's value: sha256:<64 lowercase hex> (the only algorithm the store has); throws
// Error naming the value otherwise.
oci::Digest parse_add_checksum(const std::string& text);

struct FetchOptions {
    std::optional<oci::Digest> checksum;  // verified against the received bytes
    std::uint64_t max_bytes = kMaxAddUrlBytes;
    int max_redirects = 10;
};

struct FetchedFile {
    oci::Digest digest;  // sha256 of the content
    std::uint64_t size = 0;
    std::optional<std::int64_t> last_modified;  // from the response, seconds since the epoch
};

// Downloads url into file (created 0600, O_EXCL), following redirects; sets the file's mtime
// (Last-Modified, else 0). Throws Error "download URL: ..." on a network failure, a status
// that is not 2xx, a body over max_bytes or a checksum mismatch (naming both digests).
FetchedFile fetch_url(registry::Transport& transport, const std::string& url, const std::filesystem::path& file,
                      const FetchOptions& options = {});

// The http(s) sources of one ADD step and their downloads, in a private dir under the store's
// tmp/ that goes with this object. While downloads run, SIGINT/SIGTERM/SIGHUP are blocked and
// polled: one stops the transfer and becomes an Interrupted error (exit 128+N), so the dir and
// the build's rollback are cleaned up on the way out.
class UrlSources {
public:
    // What a transport's `cancelled` callback asks (shared: the factory outlives moves).
    struct StopState {
        HeldSignals* poll = nullptr;     // set while fetch_all runs
        int signal = 0;                  // the stop signal taken, 0 = none
        bool stop_requested();
    };

    // dir: a fresh dir for the downloads (created 0700; removed with its content on
    // destruction). stop: what transports' cancel callback polls (none: never cancelled).
    UrlSources(std::vector<std::string> urls, std::optional<oci::Digest> checksum, std::filesystem::path dir,
               registry::TransportFactory transports, std::shared_ptr<StopState> stop = nullptr);
    UrlSources(const UrlSources&) = delete;
    UrlSources& operator=(const UrlSources&) = delete;
    UrlSources(UrlSources&& other) noexcept;  // other no longer owns the dir
    UrlSources& operator=(UrlSources&&) = delete;
    ~UrlSources();

    // The step cache key's part for these sources: the URL, the file name and, with
    // --checksum, that checksum; without, the downloaded content's digest and Last-Modified
    // (downloading now).
    std::vector<std::string> key_parts();
    // Downloads what is not downloaded yet; the copy's sources, relative to dir() (one
    // subdir per URL, names escaped for the copy's wildcard matching).
    std::vector<std::string> copy_sources();
    const std::filesystem::path& dir() const noexcept { return dir_; }

private:
    void fetch_all();

    std::vector<std::string> urls_;
    std::optional<oci::Digest> checksum_;
    std::filesystem::path dir_;
    registry::TransportFactory transports_;
    std::shared_ptr<StopState> stop_;
    std::vector<FetchedFile> fetched_;  // one per URL once fetch_all() ran
};

// Takes ADD's expanded sources: nullopt when none is a URL (and no --checksum was given);
// else the URL sources, their downloads to go in a new dir under tmp_dir. Git sources, URLs
// mixed with local sources or heredocs, and --checksum with a local source or with more than
// one source are refused with an Error.
std::optional<UrlSources> url_sources(const std::vector<std::string>& sources, const std::string& checksum,
                                      const std::filesystem::path& tmp_dir);

}  // namespace aishell::composer
