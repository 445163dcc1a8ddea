// Whose files the chain may build from and run. Without a check, another local user can plant
// /tmp/.git and /tmp/.aishell/Dockerfile: a victim running `aishell` in /tmp/x would build that
// Dockerfile and run its ENTRYPOINT as themselves, with /tmp bound, their ssh agent and git
// identity (git's CVE-2022-24765 is the same attack on a .git). The rules:
// - the project (find_project): a directory holding a .git counts only when the caller owns
//   both (git's ensure_valid_ownership, safe.directory); a foreign one ends the search;
// - ~/.aishell and <project>/.aishell (the link and the directory it names), their Dockerfile,
//   .dockerignore and every entry the build context sends: owned by the caller and writable by
//   nobody else (OpenSSH's StrictModes, with Debian's user-private-group exception: group write
//   is allowed when the group is the caller's own private group, the umask 002 default there).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace aishell::composer {

// What is wrong with a file's stat data for the caller; None when it is the caller's alone.
enum class Untrusted { None, Owner, OtherWritable, GroupWritable };

// Pure: st's owner and mode against caller. group_is_private says whether st's group is the
// caller's own private group (asked only for a group-writable entry). A symlink's mode is
// ignored (always 0777, never used by the kernel); its owner counts.
Untrusted untrusted_reason(const struct stat& st, uid_t caller, bool group_is_private);

// A user private group (login.defs USERGROUPS_ENAB): the caller's primary group, named as the
// caller, with no other member. Pure; the caller looks the entries up.
bool is_private_group(gid_t gid, const std::string& group_name, const std::vector<std::string>& members,
                      gid_t caller_gid, const std::string& caller_name);

// The check as the chain runs it: the caller is the effective uid; group lookups are made once
// per group (only for group-writable entries).
class TrustCheck {
public:
    TrustCheck();

    // Throws Error "refusing PATH: why" with a hint when st is not the caller's alone.
    void require(const std::filesystem::path& path, const struct stat& st);

    uid_t caller() const { return uid_; }

private:
    bool group_is_private(gid_t gid);

    uid_t uid_;
    gid_t gid_;
    std::string name_;
    std::map<gid_t, bool> private_groups_;
};

// Whether the caller owns dir and its .git entry (git_st, from lstat): only then is dir the
// project (git's safe.directory rule; root-owned / or /tmp never become someone's project).
bool owns_repository(const std::filesystem::path& dir, const struct stat& git_st, uid_t caller);

}  // namespace aishell::composer
