// The container's process from the image config and the command line, as `docker run` builds
// it: Env (+ -e), WorkingDir (-w), User (--user, resolved in the image's /etc/passwd and
// /etc/group), Entrypoint + Cmd (--entrypoint, the command line), PATH/HOSTNAME/HOME defaults.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "oci/types.hpp"
#include "runtime/container.hpp"

namespace aishell::runtime {

inline constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct ProcessOptions {
    std::vector<std::string> command;            // after --; empty: the image's Cmd
    std::optional<std::string> entrypoint;       // --entrypoint ("" clears it)
    std::vector<std::string> env;                // -e K=V or -e K (from aishell's environment)
    std::vector<std::string> host_env;           // K=V from the host (TERM, proxies, git identity):
                                                 // over the image's Env, under -e
    bool default_shell = false;                  // no command: bash when the image has it, else sh
    std::optional<std::string> workdir;          // -w
    std::optional<std::string> user;             // --user name|uid[:group|gid]
    bool keep_id = false;                        // --userns=keep-id
    bool tty = false;
    std::string hostname;
};

// The files a user lookup needs, as the container will see them.
struct UserDb {
    std::optional<std::string> passwd;  // /etc/passwd content
    std::optional<std::string> group;   // /etc/group content
};

struct ResolvedUser {
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::vector<gid_t> groups;
    std::string name;
    std::string home = "/";
};

// Resolves "name", "uid", "name:group", "uid:gid" (Docker's rules: a numeric uid need not
// exist; a name must). Throws Error naming what is missing.
ResolvedUser resolve_user(const std::string& spec, const UserDb& db);

// The owner BuildKit's file operations (WORKDIR's mkdir) give "user[:group]" (llb.WithUser,
// solver/llbsolver/ops/user_linux.go readUser): a uid N alone is N:N, a name its uid and
// primary gid, a name missing from /etc/passwd 0:0 (not an error, unlike resolve_user); a
// group (gid, or a name found in /etc/group) replaces the gid.
ResolvedUser resolve_file_owner(const std::string& spec, const UserDb& db);

// Reads path as the overlay of layers (top first) shows it: the topmost layer with a regular
// file wins; a whiteout (0/0 char device) hides it.
std::optional<std::string> read_layered_file(const std::filesystem::path& layers_dir,
                                             const std::vector<std::string>& layers, const std::string& path);

// Host identity for keep-id.
struct HostUser {
    std::uint32_t uid = 0, gid = 0;
    std::string name, home, shell = "/bin/sh";
};
HostUser current_host_user();

// Adds PATH=kDefaultPath to env when it has no PATH; returns the PATH's directories (empty ones
// dropped), where the runtime searches a bare argv[0]. `exec` (build_process) and the build's
// RUN both go through it.
std::vector<std::string> complete_path(std::vector<std::string>& env);


// Whether the image has an executable `name` in one of the PATH dirs given (image_fs.hpp).
using ExecutableProbe = std::function<bool(const std::string& name, const std::vector<std::string>& path_dirs)>;

// The process `docker run` would start. With opts.default_shell and no command, the command
// is `bash` when has_executable finds it in the container's PATH, else `sh`, handed to the
// image's ENTRYPOINT like any command (`docker run -it IMAGE bash`).
ProcessSpec build_process(const oci::ImageConfig& config, const ProcessOptions& opts, const UserDb& db,
                          const std::optional<HostUser>& keep_id_user, const ExecutableProbe& has_executable = {});

}  // namespace aishell::runtime
