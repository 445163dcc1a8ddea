#include "composer/chain_names.hpp"

namespace aishell::composer {

bool is_chain_name(std::string_view name) {
    return name == kFoundationImage || name == kBaseImage ||
           (name.size() > kExtImagePrefix.size() && name.starts_with(kExtImagePrefix));
}

std::optional<std::string> chain_name_refusal(std::string_view name, std::string_view verb) {
    if (!is_chain_name(name)) return std::nullopt;
    std::string hint;
    if (name == kFoundationImage) {
        hint = "choose another foundation with `aishell setup --foundation REF`";
    } else if (name == kBaseImage) {
        hint = "edit ~/.aishell/Dockerfile to change the base, or delete it to use the foundation";
    } else {
        hint = "a project's image is rebuilt from its .aishell/Dockerfile; `aishell volumes prune` "
               "removes those of projects that are gone";
    }
    return std::string(name) + " belongs to aishell's image chain and cannot be " +
           std::string(verb) + "; " + hint;
}

}  // namespace aishell::composer
