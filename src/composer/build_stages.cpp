// Planning a build's stages (see build_stages.hpp).
#include "composer/build_stages.hpp"

#include "common/error.hpp"
#include "common/parse_number.hpp"
#include "composer/build_keys.hpp"
#include "oci/image.hpp"

namespace aishell::composer {

namespace {

std::string lower_ascii(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// The names of the stages and images a stage's steps copy or mount from.
std::vector<std::string> from_names(const Stage& s) {
    std::vector<std::string> names;
    for (const auto& ins : s.instructions) {
        if (auto* c = std::get_if<CopyInstr>(&ins.command); c && !c->from.empty()) names.push_back(c->from);
        if (auto* r = std::get_if<RunInstr>(&ins.command))
            for (const auto& m : r->mounts)
                if (auto f = m.options.find("from"); f != m.options.end() && !f->second.empty())
                    names.push_back(f->second);
    }
    return names;
}

void collect_needed(const Dockerfile& df, int index, const std::map<std::string, std::string>& global_scope,
                    std::set<int>& needed) {
    if (!needed.insert(index).second) return;
    const Stage& s = df.stages[index];
    if (auto dep = stage_by_name(df, expand_from(df, s, global_scope), index))
        collect_needed(df, *dep, global_scope, needed);
    for (const auto& name : from_names(s))
        if (auto dep = stage_by_name(df, name, index)) collect_needed(df, *dep, global_scope, needed);
}

}  // namespace

std::optional<int> stage_by_name(const Dockerfile& df, const std::string& name, int before) {
    std::string n = lower_ascii(name);
    for (const auto& s : df.stages) {
        if (s.index >= before) break;
        if (!s.name.empty() && s.name == n) return s.index;
    }
    if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) {
        // A number too large for an index names an image, as BuildKit's strconv.Atoi fails.
        if (auto i = to_number<int>(n); i && *i < before) return *i;
    }
    return std::nullopt;
}

bool is_scratch(const std::string& base) { return lower_ascii(base) == "scratch"; }

std::set<int> needed_stages(const Dockerfile& df, int target, const std::map<std::string, std::string>& global_scope) {
    std::set<int> needed;
    collect_needed(df, target, global_scope, needed);
    return needed;
}

ImageState image_state(oci::Store& store, oci::Lease& lease, const std::string& ref, const PullFunction& pull) {
    std::optional<oci::ImageEntry> entry = store.find_image(ref);
    if (!entry && pull) entry = store.find_image(pull(store, ref));
    if (!entry) throw Error("image " + ref + " is not in the store", "aishell pull " + ref);
    oci::Image image = oci::load_image(store, *entry);
    lease.add(oci::image_lease_entries(image));
    ImageState s;
    s.config = image.config.json();
    s.layers = image.manifest.layers;
    s.diff_ids = image.config.diff_ids();
    s.key = image_key(image.manifest_descriptor.digest);
    return s;
}

}  // namespace aishell::composer
