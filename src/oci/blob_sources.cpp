// The per-blob source records (blob_sources.hpp).
#include "oci/blob_sources.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

#include "common/error.hpp"
#include "common/file.hpp"
#include "oci/store.hpp"

namespace aishell::oci {

namespace {

constexpr std::uint64_t kMaxRecordSize = 64 * 1024;

bool valid_name(std::string_view s) {
    return !s.empty() && s.size() <= 512 &&
           std::none_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\n' || c == '\0'; });
}

}  // namespace

std::filesystem::path blob_sources_path(const Store& store, const Digest& blob) {
    if (!blob.is_sha256()) throw Error("blob sources: unsupported digest " + blob.str());
    return store.root() / "sources" / std::string(blob.encoded());
}

std::vector<BlobSource> parse_blob_sources(std::string_view text) {
    std::vector<BlobSource> out;
    while (!text.empty()) {
        auto nl = text.find('\n');
        if (nl == std::string_view::npos) break;  // a line still being appended
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        auto space = line.find(' ');
        if (space == std::string_view::npos) continue;
        BlobSource s{std::string(line.substr(0, space)), std::string(line.substr(space + 1))};
        if (!valid_name(s.registry) || !valid_name(s.repository)) continue;
        if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(std::move(s));
    }
    return out;
}

std::vector<BlobSource> read_blob_sources(const Store& store, const Digest& blob) {
    if (!blob.is_sha256()) return {};
    auto text = read_file_if_exists(blob_sources_path(store, blob), kMaxRecordSize);
    return text ? parse_blob_sources(*text) : std::vector<BlobSource>{};
}

void record_blob_source(const Store& store, const Digest& blob, const BlobSource& source) {
    if (!valid_name(source.registry) || !valid_name(source.repository))
        throw Error("blob sources: invalid source \"" + source.registry + " " + source.repository + "\"");
    std::vector<BlobSource> known = read_blob_sources(store, blob);
    if (known.size() >= kMaxBlobSources || std::find(known.begin(), known.end(), source) != known.end()) return;
    fs::path dir = store.root() / "sources";
    if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) throw_errno("mkdir", dir.string());
    // O_APPEND and one write of a short line: concurrent pulls recording the same blob never
    // interleave inside a line (a duplicate line is harmless; the reader drops it).
    UniqueFd fd = open_file(blob_sources_path(store, blob), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, 0600);
    write_all(fd.get(), source.registry + " " + source.repository + "\n", "record blob source");
}

}  // namespace aishell::oci
