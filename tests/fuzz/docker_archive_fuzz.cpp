// What `aishell load` reads from an archive before any blob: manifest.json and repositories
// (oci/docker_archive), member names and links (oci/image_archive). The input's parts, split at
// NUL: the first is parsed as manifest.json and as repositories; the rest are member names,
// cleaned, and (name, target) pairs of symlinks resolved from every name. Bad input must end in
// aishell::Error; a manifest.json that parses must come back the same through its writer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "common/error.hpp"
#include "fuzz_input.hpp"
#include "oci/docker_archive.hpp"
#include "oci/image_archive.hpp"

namespace {

using namespace aishell::oci;

void documents(std::string_view text) {
    try {
        auto images = parse_docker_archive_manifest(text);
        if (parse_docker_archive_manifest(docker_archive_manifest_to_json(images)) != images) std::abort();
    } catch (const aishell::Error&) {
    }
    try {
        (void)parse_docker_repositories(text);
    } catch (const aishell::Error&) {
    }
}

void names_and_links(const std::vector<std::string_view>& parts) {
    std::map<std::string, std::string> symlinks;
    for (std::size_t i = 1; i + 1 < parts.size(); i += 2) {
        try {
            symlinks[clean_archive_name(parts[i])] = std::string(parts[i + 1]);
        } catch (const aishell::Error&) {
        }
    }
    for (std::size_t i = 1; i < parts.size(); ++i) {
        try {
            std::string name = clean_archive_name(parts[i]);
            // A resolved name never leaves the archive: no "..", not absolute.
            std::string real = resolve_archive_link(symlinks, {}, name);
            if (clean_archive_name(real) != real) std::abort();
        } catch (const aishell::Error&) {
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto parts = aishell::fuzz::split_nul(aishell::fuzz::as_text(data, size));
    documents(parts.front());
    names_and_links(parts);
    return 0;
}
