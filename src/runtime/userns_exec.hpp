// Running an aishell helper inside a user namespace with the store's id mapping: used to unpack
// layers (so owners land as mapped ids) and to remove a run's upper layer (whose files may be
// owned by sub ids the caller cannot delete on the host). The helper is aishell itself,
// re-executed from /proc/self/exe with a hidden subcommand; it never runs container code.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "common/helper_entry.hpp"
#include "runtime/idmap.hpp"

namespace aishell::runtime {

// clone(CLONE_NEWUSER), maps written by the parent, then execve(/proc/self/exe, helper.name,
// args...) as root of the namespace. helper is one of a module's helpers.hpp entries. Returns
// the helper's exit status; throws Error when it cannot be started.
int run_in_userns(const IdMapping& mapping, const HelperEntry& helper, const std::vector<std::string>& args);

// A helper started by spawn_in_userns and still running: killed (SIGKILL) and reaped on
// destruction unless wait() reaped it.
class UsernsHelper {
public:
    explicit UsernsHelper(pid_t pid) noexcept : pid_(pid) {}
    UsernsHelper(UsernsHelper&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
    UsernsHelper& operator=(UsernsHelper&&) = delete;
    UsernsHelper(const UsernsHelper&) = delete;
    ~UsernsHelper();
    pid_t pid() const noexcept { return pid_; }
    int wait();  // its exit status (128+N when killed by signal N)
    // Lets it run on unwaited (a helper meant to outlive this process: userns_holder.hpp).
    void release() noexcept { pid_ = -1; }

private:
    pid_t pid_;
};

// How spawn_in_userns starts a helper.
struct HelperOptions {
    // The one descriptor the helper keeps across its exec (its CLOEXEC flag is cleared in the
    // child), -1 for none: a channel to a long-lived helper (the build engine's step helper).
    int keep_fd = -1;
    // false leaves the helper with the caller's own ids (the user namespace holder, whose files
    // and /proc entries must stay the caller's whatever the mapping makes of root).
    bool become_root = true;
    // false starts it with an empty environment (the holder: it outlives the caller and must
    // not carry the caller's variables, AISHELL_STORE and credentials included, for its life).
    bool inherit_environment = true;
};

// As run_in_userns, but returns once the maps are written, with the helper running.
UsernsHelper spawn_in_userns(const IdMapping& mapping, const HelperEntry& helper, const std::vector<std::string>& args,
                             const HelperOptions& options = {});

// Removes dir; files the caller cannot remove on the host are removed inside the namespace by
// `aishell __rm DIR` (runtime/helpers.hpp; its body: remove_tree_here()).
void remove_tree(const IdMapping& mapping, const std::string& dir);
int remove_tree_here(const std::string& dir) noexcept;

}  // namespace aishell::runtime
