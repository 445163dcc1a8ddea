// The user namespace holder (subuid mode): a small long-lived process that keeps one user
// namespace with the store's mapping alive, so that `exec` joins it with setns(2) instead of
// creating a namespace and running newuidmap and newgidmap for it on every start (two setuid
// programs: about 1.5 ms, a third of the whole start). Rootless podman keeps a "pause process"
// for the same reason.
//
// The holder is `aishell __userns-hold RECORD` running in the namespace: it writes RECORD
// ("<pid> <start time>\n", atomically) and then waits; it exits when RECORD is removed or
// replaced (inotify, re-checked every minute), so deleting the store ends it, and on SIGTERM.
// It keeps no file of the store open and its cwd is /.
//
// A joiner trusts a recorded holder only after checking, through a pidfd (so the pid cannot be
// reused under it), that the process is alive, started when recorded, is named aishell-userns,
// belongs to the caller, and that its namespace's uid_map and gid_map are exactly the wanted
// mapping; anything else is treated as no holder, and a new one replaces the record.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "runtime/idmap.hpp"

namespace aishell::runtime {

// Joins the calling process to the user namespace of the holder for `mapping` (subuid mode),
// starting the holder first when there is none. `state_dir` is where records live (the store's
// tmp/). Afterwards the caller is root of that namespace, with its full capability set there:
// it must have gathered every host fact it needs (probe_host, paths) before. The caller must be
// single-threaded. Returns false, changing nothing, when the holder cannot be used (no pidfd or
// setns support, a holder that fails to start): the caller then makes its own namespace.
bool join_userns_holder(const std::filesystem::path& state_dir, const IdMapping& mapping);

// `aishell __userns-hold RECORD`, run by spawn_in_userns inside the new namespace: the holder's
// life. args = {RECORD, READY_FD}; the holder writes one byte to READY_FD once RECORD names it.
int hold_userns_here(const std::vector<std::string>& args);

// Ends every holder recorded in `state_dir` (`aishell system reset`): a record whose process is
// alive, named aishell-userns, the caller's and started when recorded gets SIGTERM through a
// pidfd, then SIGKILL if it has not exited within a second. Returns how many were ended.
int stop_userns_holders(const std::filesystem::path& state_dir);

// The record that names the holder for `mapping` in `state_dir` (exposed for tests).
std::filesystem::path userns_holder_record(const std::filesystem::path& state_dir, const IdMapping& mapping);

}  // namespace aishell::runtime
