// The parent side of root emulation with recorded owners (ChownEmulation::Record): the container
// loads the emulation filter with a seccomp user-notification listener and passes its fd to
// aishell, whose ChownSupervisor answers every chown-family call of the container:
//
//  - the target is found as the caller would find it: its path read from the caller's memory
//    (/proc/PID/mem), relative paths joined to the caller's cwd or dirfd (their container paths,
//    readlink of /proc/PID/{cwd,fd/N}), then opened beneath the caller's root (/proc/PID/root)
//    with openat2 RESOLVE_IN_ROOT, so symlinks resolve inside the container and nothing outside
//    it can be named; SECCOMP_IOCTL_NOTIF_ID_VALID after the opens guards against pid reuse;
//  - a target that does not exist gets the errno chown(2) would give (ENOENT, ENOTDIR, ELOOP,
//    EBADF, ...); any other call gets 0 and changes no owner on disk;
//  - a target on the container's root overlay (not a bind, /dev, /proc) whose wanted owner
//    differs from what its layer would record is copied up if it is only in a lower layer (a
//    chown(-1, -1) through the overlay, which is what the real chown would have done too, with
//    the same clearing of set-id bits), and its wanted uid:gid is appended to the owner table
//    (oci/owner_table.hpp) with the upper dir entry's identity; the layer writer puts it in the
//    tar header. -1 keeps the id recorded before, else the one on disk.
//
// With an EmulatedIdentity (a RUN under a non-root USER in single mode), it also answers the
// get*id family: getuid/geteuid with USER's uid, getgid/getegid with its gid, getresuid and
// getresgid by writing the three ids into the caller's memory (/proc/PID/mem, opened and then
// checked with SECCOMP_IOCTL_NOTIF_ID_VALID), getgroups with USER's supplementary groups.
//
// What it writes outside the table: nothing but that chown(-1, -1) through the overlay. Its reads
// are confined to the container's root by RESOLVE_IN_ROOT. Everything the container passes (the
// path, ids, fds) is checked, never trusted.
#pragma once

#include <linux/seccomp.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"
#include "oci/owner_table.hpp"
#include "runtime/fakeroot.hpp"
#include "runtime/idmap.hpp"

namespace aishell::runtime {

class ChownSupervisor {
public:
    // listener: the seccomp notification fd; upper_dir: the run's upper dir (the layer to be);
    // table: where records are appended (created on the first one, header first).
    // identity: also answer the get*id family with these ids (fakeroot.hpp, emulate_identity).
    ChownSupervisor(UniqueFd listener, const std::filesystem::path& upper_dir, std::filesystem::path table,
                    IdMapping mapping, std::optional<EmulatedIdentity> identity = std::nullopt);

    int fd() const noexcept { return listener_.get(); }
    // Receives and answers one notification (poll reported POLLIN). Throws Error when the table
    // cannot be written (the run then fails: a layer without its owners would be wrong).
    void handle_one();
    // Records appended so far.
    std::size_t recorded() const noexcept { return recorded_; }

private:
    enum class Kind { Path, PathNoFollow, Fd, At, GetUid, GetGid, GetResUid, GetResGid, GetGroups };
    struct Call {
        Kind kind;
        bool ids16 = false;  // i386's old calls: 16-bit ids (0xffff = unchanged for chown)
    };
    struct Answer {
        int error = 0;          // errno for the caller, 0 for success
        std::int64_t value = 0;  // the return value on success
    };

    Answer answer(const seccomp_notif& req);
    int answer_chown(const seccomp_notif& req, Call call);  // errno, 0 for success
    // The file a chown-family call names, opened O_PATH as the kernel would find it (through
    // the caller's fd, cwd or dirfd, and its root): 0, or the errno the call fails with.
    static int open_chown_target(const std::string& proc, const seccomp_notif& req, Call call, int root, int mem,
                                 UniqueFd& target);
    // Appends the owner a chown gives the layer entry `rel` (target, stat `st`) to the table,
    // unless it is the owner the layer would record anyway.
    void record_owner(const seccomp_notif& req, int target, const std::string& rel, const struct stat& st,
                      std::optional<std::uint32_t> uid, std::optional<std::uint32_t> gid);
    // The notification's caller is still the one it was (its pid was not reused).
    bool still_valid(const seccomp_notif& req) const;
    Answer answer_identity(const seccomp_notif& req, Call call);
    std::optional<oci::EntryIdentity> upper_identity(const std::string& rel) const;
    void append(const std::string& line);

    UniqueFd listener_;
    UniqueFd upper_;
    std::filesystem::path table_path_;
    UniqueFd table_;
    IdMapping mapping_;
    std::optional<EmulatedIdentity> identity_;
    std::map<std::pair<std::uint32_t, int>, Call> calls_;  // (audit arch, nr) -> what it is
    std::map<std::string, oci::OwnerRecord> wanted_;     // path -> last record
    std::vector<char> notif_buf_, resp_buf_;              // sized by SECCOMP_GET_NOTIF_SIZES
    std::size_t recorded_ = 0;
};

}  // namespace aishell::runtime
