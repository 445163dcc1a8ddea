// The COPY/ADD step's plan (see build_copy_step.hpp).
#include "composer/build_copy_step.hpp"

namespace aishell::composer {

namespace fs = std::filesystem;

namespace {

std::string history_text(const CopyStepArgs& a, const CopyPlan& p, const CopyExpanders& expand) {
    std::string text = a.keyword;
    if (!p.from.empty()) text += " --from=" + p.from;
    if (!a.chown.empty()) text += " --chown=" + expand.word(a.chown);
    if (!a.chmod.empty()) text += " --chmod=" + expand.word(a.chmod);
    for (const auto& src : p.request.sources) text += " " + src;
    return text + " " + p.request.dest;
}

// The destination, absolute under WORKDIR, cleaned, with the trailing '/' kept (it says "a
// directory").
std::string destination(const ImageState& s, const std::string& dest) {
    const bool slash = !dest.empty() && dest.back() == '/';
    std::string out = fs::path(absolute_in_workdir(s, dest)).lexically_normal().string();
    if (slash && out.back() != '/') out += '/';
    return out;
}

}  // namespace

CopyStepArgs copy_step_args(const CopyInstr& c) {
    return {"COPY", c.sources, c.dest, c.heredocs, c.from, c.chown, c.chmod, "", false};
}

CopyStepArgs copy_step_args(const AddInstr& a) {
    return {"ADD", a.sources, a.dest, a.heredocs, "", a.chown, a.chmod, a.checksum, true};
}

CopyPlan plan_copy(const CopyStepArgs& a, const ImageState& s, const CopyExpanders& expand,
                   const std::function<runtime::UserDb()>& user_db, const fs::path& tmp_dir) {
    CopyPlan p;
    CopyRequest& req = p.request;
    req.instruction = a.keyword;
    req.extract_archives = a.add;
    for (const auto& h : a.heredocs) req.heredocs[h.name] = h.expand ? expand.heredoc(h.content) : h.content;
    for (const auto& src : a.sources) req.sources.push_back(src.rfind("<<", 0) == 0 ? src : expand.word(src));
    // ADD's http(s) sources are downloaded by the engine and copied from there (build_fetch.hpp).
    if (a.add)
        if (std::optional<UrlSources> remote = url_sources(req.sources, expand.word(a.checksum), tmp_dir))
            p.remote.emplace(std::move(*remote));  // UrlSources moves but is not assignable
    req.dest = destination(s, expand.word(a.dest));
    const std::string chown = expand.word(a.chown);
    if (!chown.empty()) req.chown = copy_owner(chown, user_db());
    if (!a.chmod.empty()) req.chmod = parse_chmod(expand.word(a.chmod), a.keyword);
    p.from = a.from.empty() ? "" : expand.word(a.from);
    req.preserve_owner = !p.from.empty();
    p.text = history_text(a, p, expand);
    return p;
}

std::optional<CopyOwner> copy_owner(const std::string& spec, const runtime::UserDb& db) {
    if (spec.empty()) return std::nullopt;
    auto colon = spec.find(':');
    std::string user = spec.substr(0, colon);
    auto u = runtime::resolve_user(user, db);
    const bool numeric = !user.empty() && user.find_first_not_of("0123456789") == std::string::npos;
    CopyOwner o{u.uid, numeric ? u.uid : u.gid};
    if (colon != std::string::npos) o.gid = runtime::resolve_user("0:" + spec.substr(colon + 1), db).gid;
    return o;
}

}  // namespace aishell::composer
