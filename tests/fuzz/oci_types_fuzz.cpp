// The JSON documents a registry or an OCI layout hands over (oci/types): the manifest kind is
// detected as a pull does it, the document parsed as that kind, as every other kind, and as an
// image config with every accessor aishell reads (inspect, run, build FROM). What parses as a
// manifest or index also serializes. Bad documents must end in aishell::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.hpp"
#include "fuzz_input.hpp"
#include "oci/types.hpp"

namespace {

using namespace aishell::oci;

void as_kind(std::string_view bytes, ManifestKind kind) {
    try {
        if (is_index_kind(kind)) {
            Index i = parse_index(bytes, kind);
            (void)index_to_json(i);
            for (const auto& d : i.manifests)
                if (d.platform) (void)platform_match_score(Platform{"linux", "arm64", "v8", "", {}}, *d.platform);
        } else {
            Manifest m = parse_manifest(bytes, kind);
            (void)manifest_to_json(m);
            for (const auto& l : m.layers) {
                try {
                    (void)layer_compression(l.media_type);
                } catch (const aishell::Error&) {
                }
            }
        }
    } catch (const aishell::Error&) {
    }
}

void as_config(std::string_view bytes) {
    try {
        ImageConfig c = ImageConfig::parse(bytes);
        (void)c.platform();
        (void)c.diff_ids();
        (void)c.env();
        (void)c.cmd();
        (void)c.entrypoint();
        (void)c.working_dir();
        (void)c.user();
        (void)c.labels();
        (void)c.to_json();
    } catch (const aishell::Error&) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes = aishell::fuzz::as_text(data, size);
    ManifestKind detected = detect_manifest_kind("", bytes);
    as_kind(bytes, detected);
    for (ManifestKind k : {ManifestKind::OciIndex, ManifestKind::OciManifest, ManifestKind::DockerList,
                           ManifestKind::DockerManifest})
        if (k != detected) as_kind(bytes, k);
    as_config(bytes);
    return 0;
}
