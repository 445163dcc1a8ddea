#include "cli/image_lookup.hpp"

#include "common/error.hpp"
#include "registry/reference.hpp"

namespace aishell::cli {

std::optional<oci::ImageEntry> find_local_image(const oci::Store& store, const std::string& name) {
    if (auto entry = store.find_image(name)) return entry;
    // Only a miss is normalized: "busybox" may be stored as docker.io/library/busybox:latest.
    std::optional<registry::Reference> ref;
    try {
        ref = registry::Reference::parse(name);
    } catch (const Error&) {
        return std::nullopt;  // not a reference either: simply not here
    }
    return store.find_image(ref->str());
}

oci::ImageEntry require_local_image(const oci::Store& store, const std::string& name) {
    if (auto entry = find_local_image(store, name)) return *entry;
    throw Error("no such image in the store: " + name, "aishell images lists them; aishell pull " + name + " fetches it");
}

}  // namespace aishell::cli
