// The three-tier chain's own record in the store (DESIGN.md "The three-tier chain"): which
// manifest the chain built or aliased as aishell:base, which it built as each project's ext,
// from what, and the stat memo of each build context. Which image is which tier is decided from
// this record and the index names, never from labels alone: labels are inherited by every image
// built FROM a base, and by a base pushed to a registry and pulled by a teammate as foundation.
//
//   <store>/chain/record.json   this record (JSON, replaced atomically under the store lock)
//   <store>/chain/*.lock        the chain's build locks (chain.hpp)
//
// Readers take no lock (the file is replaced by rename); writers hold the store lock and write
// the record after the index names it describes, so a crash between the two leaves a name the
// record does not vouch for, which the chain treats as stale and builds again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/store.hpp"

namespace aishell::composer {

namespace fs = std::filesystem;

// One image the chain built (or, for a base without ~/.aishell/Dockerfile, aliased).
struct ChainBuild {
    std::string name;               // aishell:base or aishell:ext-<hash>
    oci::Digest manifest;           // what the name pointed at when the chain recorded it
    bool custom = false;            // built from a Dockerfile (false: the base is foundation's alias)
    std::string input_hash;         // sha256:... over everything below (the freshness label's value)
    std::string content_hash;       // sha256:... of the Dockerfile and its context after .dockerignore
    std::map<std::string, std::string> from;  // aishell:* images its FROM lines name -> manifest digest
    std::string built_on;           // manifest digest of the image its target stage is built FROM ("" when none is aishell's)
    std::uint64_t generation = 0;   // the record's generation when built (setup --force bumps it)
    std::string dockerfile_hash;    // sha256:... of the Dockerfile alone, to say which input changed ("" in
                                    // records written before it was kept)
    bool operator==(const ChainBuild&) const = default;
};

// The stat memo of one build context (the Dockerfile's directory): while the stat data of the
// Dockerfile and of every entry the context sends is unchanged, content_hash and the FROM names
// stand without reading or hashing anything (stat data only decides when to hash again).
struct ContextMemo {
    std::string fingerprint;                // stable_hash_hex of the stat list ("" never matches)
    std::string content_hash;               // sha256:...
    std::vector<std::string> from_images;   // aishell:* names the FROM lines give, in order, unique
    std::string final_from;                 // the aishell:* image the target stage is built on, or ""
    std::string dockerfile_hash;            // sha256:... of the Dockerfile's text ("" in older records)
    bool operator==(const ContextMemo&) const = default;
};

struct ChainRecord {
    std::uint64_t generation = 0;
    std::optional<ChainBuild> base;
    std::map<std::string, ChainBuild> exts;       // by project path (real path)
    std::map<std::string, ContextMemo> contexts;  // by context dir (real path)
    bool operator==(const ChainRecord&) const = default;
};

fs::path chain_dir(const oci::Store& store);
fs::path chain_record_path(const oci::Store& store);

// The record; an empty one when the store has none yet (a new store, or one a release without
// the chain wrote). Throws Error when the file is there but is not a record.
ChainRecord read_chain_record(const oci::Store& store);
// Replaces the record atomically. The caller holds the store lock (held is the proof).
void write_chain_record(const oci::Store& store, const oci::StoreLock& held, const ChainRecord& record);

// The record as JSON text and back (exposed for tests).
std::string chain_record_to_json(const ChainRecord& record);
ChainRecord chain_record_from_json(std::string_view text, const std::string& path);

// ---- tiers --------------------------------------------------------------------------------

enum class Tier { Foundation, Base, Ext, Other };
std::string_view tier_name(Tier tier);  // "foundation", "base", "ext", "other"

struct ImageTier {
    Tier tier = Tier::Other;
    std::string project;  // Ext: the project's path
    bool custom = false;  // Base: built from ~/.aishell/Dockerfile (else the foundation alias)
};

// The tier of an index entry: aishell:foundation is the foundation and aishell:base the base
// (the chain alone moves those names); an aishell:ext-* name is a project's ext only when the
// record holds it under that name and manifest; anything else, whatever its labels say, is
// "other".
ImageTier image_tier(const ChainRecord& record, const oci::ImageEntry& entry);

// ---- orphans (for volumes prune) -----------------------------------------------------------

struct ChainOrphan {
    std::string name;       // the index name to untag
    oci::Digest manifest;
    std::string project;    // "" for a name the record does not know
    std::string reason;     // "its project /p is gone", "built on a base that moved on", ...
};

// Ext images nothing will run any more: those whose project dir is gone, those built FROM an
// aishell image that has moved on since (they would be rebuilt before any run), and
// aishell:ext-* names the record does not vouch for. index: store.list_images().
std::vector<ChainOrphan> chain_orphans(const ChainRecord& record, const std::vector<oci::ImageEntry>& index);

// Takes the ext of project out of the record (after the caller untagged its name).
bool forget_ext(ChainRecord& record, const std::string& project);

// ---- names ---------------------------------------------------------------------------------

// aishell:ext-<first 12 hex of SHA-256 of the project's path>.
std::string ext_image_name(const std::string& project_path);

}  // namespace aishell::composer
