#include "registry/archive_name.hpp"

namespace aishell::registry {

std::string familiar_name(const Reference& ref) {
    if (!ref.is_docker_hub()) return ref.name();
    constexpr std::string_view kOfficial = "library/";
    std::string_view p = ref.path;
    if (p.substr(0, kOfficial.size()) == kOfficial && p.find('/', kOfficial.size()) == std::string_view::npos)
        p.remove_prefix(kOfficial.size());
    return std::string(p);
}

oci::image_archive::ArchiveName archive_name(std::string_view store_name) {
    Reference ref = Reference::parse(store_name);
    oci::image_archive::ArchiveName out;
    // parse() gives a name with neither tag nor digest ":latest"; one with only a digest keeps
    // no tag, and Docker puts no digest in RepoTags.
    if (!ref.tag.empty()) {
        out.repo_tag = familiar_name(ref) + ":" + ref.tag;
        out.ref_name = ref.tag;
    }
    out.image_name = ref.str();
    return out;
}

}  // namespace aishell::registry
