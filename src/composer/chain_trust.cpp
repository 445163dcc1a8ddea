#include "composer/chain_trust.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "common/error.hpp"

namespace aishell::composer {

Untrusted untrusted_reason(const struct stat& st, uid_t caller, bool group_is_private) {
    if (st.st_uid != caller) return Untrusted::Owner;
    if (S_ISLNK(st.st_mode)) return Untrusted::None;
    if (st.st_mode & S_IWOTH) return Untrusted::OtherWritable;
    if ((st.st_mode & S_IWGRP) && !group_is_private) return Untrusted::GroupWritable;
    return Untrusted::None;
}

bool is_private_group(gid_t gid, const std::string& group_name, const std::vector<std::string>& members,
                      gid_t caller_gid, const std::string& caller_name) {
    if (gid != caller_gid || caller_name.empty() || group_name != caller_name) return false;
    return std::all_of(members.begin(), members.end(), [&](const std::string& m) { return m == caller_name; });
}

namespace {

// getpwuid_r/getgrgid_r with a buffer that grows on ERANGE (the re-entrant forms: no static
// storage shared with other lookups).
template <typename Entry, typename Lookup>
bool lookup(Lookup&& fn, Entry& entry, std::vector<char>& buf) {
    buf.resize(1024);
    for (;;) {
        Entry* found = nullptr;
        int rc = fn(&entry, buf.data(), buf.size(), &found);
        if (rc == ERANGE && buf.size() < (1u << 20)) {
            buf.resize(buf.size() * 2);
            continue;
        }
        return rc == 0 && found != nullptr;
    }
}

std::string user_name(uid_t uid) {
    struct passwd pw {};
    std::vector<char> buf;
    if (lookup([&](struct passwd* e, char* b, std::size_t n, struct passwd** r) { return ::getpwuid_r(uid, e, b, n, r); },
               pw, buf))
        return pw.pw_name;
    return {};
}

std::string who(uid_t uid) {
    std::string name = user_name(uid);
    return name.empty() ? "uid " + std::to_string(uid) : name + " (uid " + std::to_string(uid) + ")";
}

std::string octal_mode(mode_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
    return buf;
}

}  // namespace

TrustCheck::TrustCheck() : uid_(::geteuid()), gid_(::getegid()) {}

bool TrustCheck::group_is_private(gid_t gid) {
    auto it = private_groups_.find(gid);
    if (it != private_groups_.end()) return it->second;
    if (name_.empty()) name_ = user_name(uid_);
    struct group gr {};
    std::vector<char> buf;
    bool ok = false;
    if (lookup([&](struct group* e, char* b, std::size_t n, struct group** r) { return ::getgrgid_r(gid, e, b, n, r); },
               gr, buf)) {
        std::vector<std::string> members;
        for (char** m = gr.gr_mem; m && *m; ++m) members.emplace_back(*m);
        ok = is_private_group(gid, gr.gr_name, members, gid_, name_);
    }
    private_groups_[gid] = ok;
    return ok;
}

void TrustCheck::require(const std::filesystem::path& path, const struct stat& st) {
    bool group_write = !S_ISLNK(st.st_mode) && (st.st_mode & S_IWGRP) && st.st_uid == uid_;
    Untrusted why = untrusted_reason(st, uid_, group_write && group_is_private(st.st_gid));
    const std::string p = path.string();
    const std::string rule = ": what aishell builds runs as you, so it must be yours alone";
    switch (why) {
    case Untrusted::None:
        return;
    case Untrusted::Owner:
        throw Error("refusing " + p + ": it belongs to " + who(st.st_uid) + ", not to you (" + who(uid_) + ")" + rule,
                    "run aishell in a directory of your own, or, if you trust it, copy it and make the copy yours");
    case Untrusted::OtherWritable:
        throw Error("refusing " + p + ": any user can write to it (mode " + octal_mode(st.st_mode) + ")" + rule,
                    "chmod o-w " + p);
    case Untrusted::GroupWritable:
        throw Error("refusing " + p + ": its group (gid " + std::to_string(st.st_gid) + ") can write to it (mode " +
                        octal_mode(st.st_mode) + ") and is not your private group" + rule,
                    "chmod g-w " + p);
    }
}

bool owns_repository(const std::filesystem::path& dir, const struct stat& git_st, uid_t caller) {
    struct stat st {};
    return git_st.st_uid == caller && ::stat(dir.c_str(), &st) == 0 && st.st_uid == caller;
}

}  // namespace aishell::composer
