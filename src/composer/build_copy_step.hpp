// The COPY/ADD step as the engine plans it: the instruction's words expanded, the destination
// made absolute under WORKDIR, --chown resolved in the image's /etc/passwd and /etc/group,
// --chmod parsed, ADD's URL sources taken apart (build_fetch.hpp) and the history text. The
// copy itself runs in the step helper (build_copy.hpp, build_step.hpp).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "composer/build_config.hpp"
#include "composer/build_copy.hpp"
#include "composer/build_fetch.hpp"
#include "composer/instructions.hpp"
#include "runtime/process.hpp"

namespace aishell::composer {

// A COPY or ADD as written.
struct CopyStepArgs {
    std::string keyword;  // COPY | ADD
    std::vector<std::string> sources;
    std::string dest;
    std::vector<Heredoc> heredocs;
    std::string from, chown, chmod, checksum;
    bool add = false;
};
CopyStepArgs copy_step_args(const CopyInstr& c);
CopyStepArgs copy_step_args(const AddInstr& a);

struct CopyExpanders {
    std::function<std::string(const std::string&)> word;     // a word with the step's ENV/ARGs
    std::function<std::string(const std::string&)> heredoc;  // an unquoted heredoc's body
};

struct CopyPlan {
    CopyRequest request;
    std::string from;                  // --from, expanded ("" from the context)
    std::optional<UrlSources> remote;  // ADD's http(s) sources
    std::string text;                  // the history's created_by
};

// user_db is asked only when --chown is given; tmp_dir is where ADD's downloads go.
CopyPlan plan_copy(const CopyStepArgs& args, const ImageState& s, const CopyExpanders& expand,
                   const std::function<runtime::UserDb()>& user_db, const std::filesystem::path& tmp_dir);

// --chown user[:group] as BuildKit resolves it: a numeric uid alone gives the same gid, a user
// name its primary group; a group replaces the gid. nullopt for "".
std::optional<CopyOwner> copy_owner(const std::string& spec, const runtime::UserDb& db);

}  // namespace aishell::composer
