// RUN --mount in the build engine, as BuildKit runs it (dockerfile2llb's convert_runmount.go,
// convert_secrets.go, convert_ssh.go; the solver's cache mounts; the executor's stub cleaner):
//  - the caller's side: `--secret` and `--ssh` values in buildx syntax;
//  - resolve_mounts(): a RUN's parsed mounts after expansion, with BuildKit's defaults filled
//    in (relative targets under WORKDIR, cache id = target, secret target /run/secrets/<id>,
//    ssh target /run/buildkit/ssh_agent.N), and what each adds to the step cache key: the
//    mount's spec, plus for binds the digest of what is bound; never a cache's or a secret's
//    content;
//  - MountSession: the host side of one RUN's mounts while it runs (cache dirs under
//    <store>/cache/mounts held with flock, secret files in a private tmpfs dir, the mount work
//    dir for copies and overlay uppers), turned into runtime::MountStep entries and env;
//  - the in-namespace side (run by `aishell __prepare-run-mounts`): preparing owners and copies that
//    need container ids, and removing the mountpoints the runtime had to create from the RUN's
//    upper dir, so no empty stub of a mount lands in the layer.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "composer/dockerignore.hpp"
#include "composer/instructions.hpp"
#include "oci/digest.hpp"
#include "oci/store.hpp"
#include "runtime/idmap.hpp"
#include "runtime/mounts.hpp"

namespace aishell::composer {

// ---- the caller's side -----------------------------------------------------------------------

// `--secret id=X[,src=FILE|,env=VAR][,type=file|env]` (buildx's parseSecret and BuildKit's
// secretsprovider): exactly one of file and env is set once resolved. Without a source the id
// names an environment variable when one is set, else a file.
struct SecretSource {
    std::string id;
    std::string file;
    std::string env;
};

// Parses one --secret value; env_exists tells whether a variable is set (a seam for tests).
// Throws Error "invalid --secret ..." naming the value.
SecretSource parse_secret_flag(const std::string& value, const std::function<bool(const std::string&)>& env_exists);

// Checks a parsed secret as buildx does before the build (a file source must exist and be at
// most 500 KiB) and that no id is given twice. Throws Error.
void check_secret_sources(const std::vector<SecretSource>& secrets);

// The secret's bytes, read when a RUN needs them; nullopt when its env source is unset.
std::optional<std::string> read_secret(const SecretSource& secret);

// `--ssh default|ID[=SOCKET]` (buildx's parseSSH): an agent socket per id; "default" and an
// empty socket mean $SSH_AUTH_SOCK.
struct SshSource {
    std::string id;
    std::string socket;  // absolute host path of a unix socket
};

// Parses one --ssh value; auth_sock is $SSH_AUTH_SOCK. The socket must exist and be a socket
// (key files, which BuildKit loads into an agent of its own, are refused with a hint).
SshSource parse_ssh_flag(const std::string& value, const std::optional<std::string>& auth_sock);

// ---- one RUN's mounts ------------------------------------------------------------------------

struct BuildMount {
    std::string type;          // bind cache tmpfs secret ssh
    std::string target;        // absolute, clean; "" for an env-only secret
    std::string source = "/";  // bind/cache: clean absolute subpath of the source
    std::string from;          // bind/cache: stage or image ("" = context for bind, empty dir for cache)
    std::string id;            // cache id (default: target as written), secret id, ssh id
    std::string sharing = "shared";
    std::optional<mode_t> mode;
    std::optional<std::uint32_t> uid, gid;
    bool readonly = false;
    bool required = false;
    std::optional<std::uint64_t> size;  // tmpfs bytes
    std::optional<std::string> env;     // secret: also (or only) as this environment variable
    // The mount as the step cache key sees it (BuildKit keys on the spec, not on contents).
    std::string spec() const;
};

// Expands and checks the parsed mounts of a RUN. expand: variable expansion with the step's
// ENV and ARGs; workdir: the stage's WORKDIR. Throws Error for a bad value after expansion.
std::vector<BuildMount> resolve_mounts(const std::vector<RunMount>& mounts,
                                       const std::function<std::string(const std::string&)>& expand,
                                       const std::string& workdir);

// go-units RAMInBytes ("64m", "1.5g", "512 KiB"): binary multipliers.
std::uint64_t parse_size_bytes(const std::string& text);

// The directory name of a cache mount under <store>/cache/mounts: sha256 over the id, the key
// of its `from` source (empty: none) and its creation settings (mode/uid/gid, when given).
std::string cache_mount_dir_name(const BuildMount& m, const std::string& from_key);

// What the mounts of a step need from the build.
struct MountInputs {
    oci::Store* store = nullptr;
    runtime::IdMapping mapping;
    std::filesystem::path context;
    const IgnoreMatcher* matcher = nullptr;
    const std::vector<SecretSource>* secrets = nullptr;
    const std::vector<SshSource>* ssh = nullptr;
    // A `from=` (stage name or index, or image): its cache-chain key, and its layer dir names
    // (top first, under <store>/layers; unpacked when missing).
    std::function<oci::Digest(const std::string&)> from_key;
    std::function<std::vector<std::string>(const std::string&)> from_layers;
};

// The mounts' part of the step cache key: each spec, the digest of the context files a bind
// mounts, and the key of a `from` source.
std::vector<std::string> mount_key_parts(const std::vector<BuildMount>& mounts, const MountInputs& in);

// One RUN's mounts while it runs. Construction acquires and prepares everything; destruction
// releases locks and removes the temporary copies and secret files.
class MountSession {
public:
    MountSession(const std::vector<BuildMount>& mounts, const MountInputs& in, const std::vector<std::string>& env);
    MountSession(const MountSession&) = delete;
    MountSession& operator=(const MountSession&) = delete;
    ~MountSession();

    // Mount steps for runtime::MountPlanInput::extra (sorted by target, parents first).
    const std::vector<runtime::MountStep>& steps() const { return steps_; }
    // K=V entries to add to the process env (SSH_AUTH_SOCK, secret env=).
    const std::vector<std::string>& env() const { return env_; }
    // Container paths whose created mountpoints the commit removes from the upper dir.
    const std::vector<std::string>& stub_targets() const { return stubs_; }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::vector<runtime::MountStep> steps_;
    std::vector<std::string> env_;
    std::vector<std::string> stubs_;
};

// ---- inside the user namespace (aishell __prepare-run-mounts) ----------------------------------------

// Runs the "prepare" ops of a helper spec: {"op":"chown",path,uid,gid,mode?},
// {"op":"mkdirs",root,path} (no symlinks), {"op":"extract",layers,source,dest} (a copy of a
// subtree of the merged layers, owners kept). Needs a private mount namespace (extract).
void run_prepare_ops(const oci::Store& store, const nlohmann::json& ops, const std::filesystem::path& work_dir);

// Removes, from the upper dir of a RUN, the mountpoints the runtime created for stubs (paths
// that did not exist in the lower layers; an empty dir or empty file) and then parents that
// were only copied up for them (empty, not opaque, same mode and owner as below), as BuildKit's
// MountStubsCleaner does. Mounts a read-only view of the lowers at run_dir/lowerview.
void remove_mount_stubs(const oci::Store& store, const std::vector<std::string>& lowers,
                        const std::vector<std::string>& stubs, const std::filesystem::path& run_dir);

}  // namespace aishell::composer
