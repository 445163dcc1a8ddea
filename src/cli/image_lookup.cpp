#include "cli/image_lookup.hpp"

#include "common/error.hpp"

namespace aishell::cli {

std::optional<oci::ImageEntry> find_local_image(const oci::Store& store, const std::string& name) {
    return store.find_image(name);
}

oci::ImageEntry require_local_image(const oci::Store& store, const std::string& name) {
    if (auto entry = find_local_image(store, name)) return *entry;
    throw Error("no such image in the store: " + name, "aishell images lists them; aishell pull " + name + " fetches it");
}

}  // namespace aishell::cli
