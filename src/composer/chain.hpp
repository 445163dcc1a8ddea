// The three-tier chain (DESIGN.md "The three-tier chain"): aishell:foundation (pulled by setup)
// -> aishell:base (built from ~/.aishell/Dockerfile, else the foundation's manifest under a second
// name) -> aishell:ext-<hash> (built from <project>/.aishell/Dockerfile). The policy lives here:
// cli asks for "the image to run for this project" and gets it, built first when anything it
// depends on changed.
//
// Freshness is content-based. A tier's inputs are its Dockerfile, its context dir after
// .dockerignore, and the manifest digests of the local aishell:* images its FROM lines name; a
// build records them in the chain's record (chain_record.hpp) and in its labels
// (aishell.base.dockerfile.hash + aishell.base.foundation.id on a base, aishell.extension.hash +
// aishell.base.id + aishell.project.path on an ext). A warm check reads the record and the index
// and stats the context: while the stat data is what the record's memo saw, nothing is read or
// hashed (no libcrypto load); stat data only ever decides when to hash again.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "composer/chain_record.hpp"
#include "oci/store.hpp"
#include "oci/types.hpp"

namespace aishell::composer {

// The labels the chain puts on what it builds (the names aishell has always used).
inline constexpr const char* kBaseDockerfileHashLabel = "aishell.base.dockerfile.hash";
inline constexpr const char* kBaseFoundationIdLabel = "aishell.base.foundation.id";
inline constexpr const char* kExtensionHashLabel = "aishell.extension.hash";
inline constexpr const char* kExtBaseIdLabel = "aishell.base.id";
inline constexpr const char* kProjectPathLabel = "aishell.project.path";

enum class ChainStep { Base, Ext };

// What the chain tells its caller while it works (cli draws a spinner from it).
class ChainProgress {
public:
    virtual ~ChainProgress() = default;
    virtual void waiting(ChainStep step) = 0;  // another aishell holds this build's lock
    virtual void building(ChainStep step) = 0;
    virtual void built(ChainStep step, std::chrono::duration<double> took) = 0;
    virtual void failed(ChainStep step) = 0;
};

struct ChainOptions {
    bool rebuild = false;              // --rebuild: build this project's ext again, without the step cache
    ChainProgress* progress = nullptr;  // null: silent (the build's output still shows when it fails)
    // Pulls a FROM image that is not in the store; returns its index name (as BuildRequest::pull).
    std::function<std::string(oci::Store&, const std::string&)> pull;
    std::filesystem::path home;        // whose ~/.aishell; empty: $HOME
};

struct ProjectImage {
    std::string name;          // aishell:ext-<hash>, or aishell:base when the project has no .aishell/Dockerfile
    oci::Descriptor manifest;  // what the name points at
    std::filesystem::path project;
};

// The project of a directory: the top level of the git work tree holding it (the nearest
// ancestor with a .git entry, as `git rev-parse --show-toplevel` finds it, without running
// git), else the directory itself; as a real path (symlinks resolved). A directory counts as a
// work tree only when the caller owns it and its .git (git's safe.directory rule,
// CVE-2022-24765); the first .git that is not the caller's ends the search: the directory
// itself is then the project.
std::filesystem::path find_project(const std::filesystem::path& cwd);

// The image to run for the project of cwd, building base and then ext first when they are
// stale. Throws Error when the foundation is missing (hint: run `aishell setup`) or a build
// fails (its output has been shown; the previous images stay).
ProjectImage image_for_project(oci::Store& store, const std::filesystem::path& cwd, const ChainOptions& options);

// What `aishell setup` does to the chain once it has named the foundation. Plain setup never
// builds: without ~/.aishell/Dockerfile (or without any base yet) aishell:base becomes the
// foundation's alias; a custom base is rebuilt lazily by the next run. force (setup --force):
// the record's generation is bumped, so every ext rebuilds on its project's next run, and a
// custom base is built at once; both without the step cache. Returns whether the base is custom.
struct SetupChainResult {
    bool custom_base = false;
    bool built = false;
};
SetupChainResult setup_chain(oci::Store& store, bool force, const ChainOptions& options);

// ---- status (`aishell check`) ------------------------------------------------------------------

struct TierStatus {
    std::string name;                    // aishell:base, aishell:ext-<hash>
    std::optional<oci::Digest> manifest;  // what the name points at now (none: not in the store)
    bool stale = false;                  // the next run builds (or, for an alias, re-points) it
    std::vector<std::string> reasons;    // why it is stale: "its Dockerfile changed", "aishell:foundation moved on", ...
    std::string error, error_hint;       // an input the chain cannot read: the next run fails on it
};

struct ChainStatus {
    bool foundation = false;              // aishell:foundation is in the store
    bool custom_base = false;             // ~/.aishell/Dockerfile exists (else base is the foundation's alias)
    std::filesystem::path base_dockerfile;  // when custom_base
    TierStatus base;
    std::filesystem::path project;        // find_project(cwd)
    std::filesystem::path ext_dockerfile;  // when ext
    std::optional<TierStatus> ext;        // none: the project has no .aishell/Dockerfile (it runs aishell:base)
};

// What the next run in cwd's project would build and why, decided by the same hashing and the
// same comparison image_for_project uses, without building, locking or writing anything (the
// context digests it computes are not remembered either).
ChainStatus chain_status(const oci::Store& store, const std::filesystem::path& cwd, const ChainOptions& options);

}  // namespace aishell::composer
