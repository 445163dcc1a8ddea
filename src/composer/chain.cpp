#include "composer/chain.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <optional>
#include <set>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/held_signals.hpp"
#include "common/stable_hash.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_copy.hpp"
#include "composer/build_engine.hpp"
#include "composer/chain_names.hpp"
#include "composer/chain_trust.hpp"
#include "composer/dockerignore.hpp"
#include "composer/instructions.hpp"
#include "oci/digest.hpp"

namespace aishell::composer {

namespace {

// A context file whose ctime is younger than this may still change within the same clock
// tick without its stat data changing; a memo made then would not notice (as ContextDigestMemo).
constexpr std::int64_t kSettleNs = 2'000'000'000;

// Where one tier's inputs are.
struct TierFiles {
    fs::path dir;         // the .aishell dir as found (a link to the context, maybe)
    fs::path context;     // real path of the .aishell dir
    fs::path dockerfile;  // context / "Dockerfile"
    std::vector<std::string> excludes;  // .dockerignore patterns aishell adds after the user's
};

// ~/.aishell is also aishell's own configuration: certs.d holds registry CAs and client keys
// (certs.d/HOST/client.key), which a `COPY . /x` in the base Dockerfile would bake into an
// image that may be pushed to a registry, and whose changes would rebuild the base. The base
// build never sees it; being last, this pattern beats any `!certs.d/...` exception.
const std::vector<std::string> kBaseContextExcludes = {"certs.d"};

std::int64_t now_ns() {
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);
    return ns_of(now);
}

std::optional<fs::path> real_path(const fs::path& p) {
    char buf[PATH_MAX];
    if (!::realpath(p.c_str(), buf)) return std::nullopt;
    return fs::path(buf);
}

bool is_regular(const fs::path& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The tier's Dockerfile when it exists (the context dir resolved), else nullopt.
std::optional<TierFiles> tier_files(const fs::path& aishell_dir, std::vector<std::string> excludes = {}) {
    if (!is_regular(aishell_dir / "Dockerfile")) return std::nullopt;
    auto context = real_path(aishell_dir);
    if (!context) return std::nullopt;
    return TierFiles{aishell_dir, *context, *context / "Dockerfile", std::move(excludes)};
}

// ---- the inputs of a tier: stat memo, then content ------------------------------------------

// One line per entry of what the stat data says; its FNV hash is the memo's fingerprint.
void append_stat(std::string& text, const std::string& rel, const struct stat& st, std::int64_t& youngest_ctime) {
    text += rel;
    text += '\0';
    for (auto v : {static_cast<std::int64_t>(st.st_dev), static_cast<std::int64_t>(st.st_ino),
                   static_cast<std::int64_t>(st.st_size), static_cast<std::int64_t>(st.st_mode), ns_of(st.st_mtim),
                   ns_of(st.st_ctim)}) {
        text += std::to_string(v);
        text += ' ';
    }
    text += '\n';
    youngest_ctime = std::max(youngest_ctime, ns_of(st.st_ctim));
}

struct ContextScan {
    std::vector<std::string> entries;  // what the build sends, sorted (walk_context)
    std::string fingerprint;           // "" when some entry is too young to be remembered
};

// Every path stat'ed here is also checked to be the caller's alone (chain_trust.hpp): this
// scan runs on every run, warm ones included, so a file another user made or may write is
// refused before anything is built from it, and the check costs no extra stat.
ContextScan scan_context(const TierFiles& files) {
    std::string stats;
    std::int64_t youngest = 0;
    struct stat st {};
    TrustCheck trust;
    auto stat_or_throw = [&](const fs::path& p, bool follow) {
        if ((follow ? ::stat(p.c_str(), &st) : ::lstat(p.c_str(), &st)) < 0) throw_errno("stat", p.string());
        trust.require(p, st);
    };
    stat_or_throw(files.dir, false);  // ~/.aishell or <project>/.aishell itself (a link counts)
    stat_or_throw(files.context, true);
    // The Dockerfile and the ignore file count whatever the patterns say about them.
    stat_or_throw(files.dockerfile, true);
    append_stat(stats, "\x01Dockerfile", st, youngest);
    std::vector<std::string> patterns;
    if (auto ignore = find_dockerignore(files.context, files.dockerfile)) {
        stat_or_throw(*ignore, true);
        append_stat(stats, "\x01" + ignore->string(), st, youngest);
        patterns = read_dockerignore(read_file(*ignore, 4 << 20), ignore->string());
    }
    patterns.insert(patterns.end(), files.excludes.begin(), files.excludes.end());
    ContextScan scan;
    scan.entries = walk_context(files.context, IgnoreMatcher(patterns));
    for (const auto& rel : scan.entries) {
        stat_or_throw(files.context / rel, false);
        append_stat(stats, rel, st, youngest);
    }
    if (youngest < now_ns() - kSettleNs) scan.fingerprint = stable_hash_hex(stats);
    return scan;
}

void hash_field(oci::Sha256& h, std::string_view s) {
    std::uint64_t n = s.size();
    h.update(&n, sizeof n);
    h.update(s);
}

// The aishell:* images the FROM lines name (after global ARG expansion; stage names are not
// images), and the one the target (last) stage is built on, followed through stage names.
// builds: the name this tier's image gets; a FROM naming it is refused (its own new digest would
// make it stale again: it would be rebuilt on top of itself on every run, a layer more each time).
void read_from_lines(const TierFiles& files, std::string_view builds, ContextMemo& memo) {
    Dockerfile df = load_dockerfile(files.dockerfile.string());
    auto scope = global_arg_scope(df, {});
    std::vector<std::string> bases;
    std::set<std::string> seen;
    for (const auto& stage : df.stages) {
        std::string base = expand_from(df, stage, scope);
        bases.push_back(base);
        bool is_stage = std::any_of(df.stages.begin(), df.stages.begin() + stage.index,
                                    [&](const Stage& s) { return !s.name.empty() && s.name == base; });
        if (is_stage || !base.starts_with("aishell:")) continue;
        if (base == builds)
            throw Error(files.dockerfile.string() + ":" + std::to_string(stage.line()) + ": FROM " + base +
                            " names the image this Dockerfile builds, so every run would rebuild it on top of itself",
                        builds == kBaseImage ? "build the global base FROM aishell:foundation"
                                             : "build the project image FROM aishell:base or aishell:foundation");
        if (seen.insert(base).second) memo.from_images.push_back(base);
    }
    memo.final_from.clear();
    for (int i = static_cast<int>(df.stages.size()) - 1; i >= 0;) {
        const std::string& base = bases[static_cast<std::size_t>(i)];
        int next = -1;
        for (int j = 0; j < i; ++j)
            if (!df.stages[static_cast<std::size_t>(j)].name.empty() && df.stages[static_cast<std::size_t>(j)].name == base) next = j;
        if (next < 0) {
            if (base.starts_with("aishell:")) memo.final_from = base;
            break;
        }
        i = next;
    }
}

// How a tier's inputs are hashed: a run remembers the file digests it computed (in the build's
// ContextDigestMemo, which it shares), a status check only reads them (check writes nothing).
enum class MemoWrites { Save, ReadOnly };

// sha256 over the Dockerfile and every entry the context sends: path, mode, link target, the
// sha256 of each file's content. Sets memo.content_hash and memo.dockerfile_hash.
void hash_context(const oci::Store& store, const TierFiles& files, const ContextScan& scan, MemoWrites writes,
                  ContextMemo& out) {
    const std::string dockerfile = read_file(files.dockerfile, 16 << 20);
    out.dockerfile_hash = oci::sha256_of(dockerfile).str();
    oci::Sha256 h;
    hash_field(h, "aishell-chain-context-1");
    hash_field(h, dockerfile);
    UniqueFd root(::open(files.context.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("open", files.context.string());
    ContextDigestMemo memo(store.cache_dir(), files.context.string());
    for (const auto& rel : scan.entries) {
        struct stat st {};
        if (::fstatat(root.get(), rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_errno("stat", (files.context / rel).string());
        hash_field(h, rel);
        std::uint32_t mode = st.st_mode;
        h.update(&mode, sizeof mode);
        if (S_ISREG(st.st_mode)) {
            hash_field(h, memo.file_digest(st, rel, [&] {
                UniqueFd f(::openat(root.get(), rel.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
                if (!f) throw_errno("open", (files.context / rel).string());
                return f;
            }).str());
        } else if (S_ISLNK(st.st_mode)) {
            std::string target(PATH_MAX, '\0');
            ssize_t n = ::readlinkat(root.get(), rel.c_str(), target.data(), target.size());
            if (n < 0) throw_errno("readlink", (files.context / rel).string());
            target.resize(static_cast<std::size_t>(n));
            hash_field(h, target);
        }
    }
    if (writes == MemoWrites::Save) memo.save();
    out.content_hash = h.finish().str();
}

// The memo of the tier's context: the record's when the stat data is unchanged, else made anew.
// builds: the image name the tier's Dockerfile builds (read_from_lines refuses a FROM naming it;
// a memo an older release recorded for such a Dockerfile is read again to say so).
ContextMemo context_memo(const oci::Store& store, const ChainRecord& record, const TierFiles& files,
                         std::string_view builds, MemoWrites writes = MemoWrites::Save) {
    ContextScan scan = scan_context(files);
    auto it = record.contexts.find(files.context.string());
    if (it != record.contexts.end() && !scan.fingerprint.empty() && it->second.fingerprint == scan.fingerprint &&
        std::find(it->second.from_images.begin(), it->second.from_images.end(), builds) == it->second.from_images.end())
        return it->second;
    ContextMemo memo;
    memo.fingerprint = scan.fingerprint;
    read_from_lines(files, builds, memo);
    hash_context(store, files, scan, writes, memo);
    return memo;
}

// ---- the state the chain decides on -----------------------------------------------------------

struct ChainState {
    ChainRecord record;
    std::map<std::string, oci::Descriptor> index;  // name -> manifest

    std::optional<oci::Descriptor> named(std::string_view name) const {
        auto it = index.find(std::string(name));
        if (it == index.end()) return std::nullopt;
        return it->second;
    }
};

ChainState load_state(const oci::Store& store) {
    ChainState s;
    s.record = read_chain_record(store);
    for (auto& e : store.list_images()) s.index[e.name] = e.descriptor;
    return s;
}

oci::Descriptor require_foundation(const ChainState& s) {
    if (auto f = s.named(kFoundationImage)) return *f;
    throw Error(std::string(kFoundationImage) + " is not in the store", "run `aishell setup` first");
}

// The digests the FROM lines' aishell images have now ("" for one the store does not hold).
std::map<std::string, std::string> from_digests(const ChainState& s, const ContextMemo& memo) {
    std::map<std::string, std::string> out;
    for (const auto& name : memo.from_images) {
        auto d = s.named(name);
        out[name] = d ? d->digest.str() : std::string();
    }
    return out;
}

// Why the build the record holds for a tier is not what its inputs would build now; empty when
// it is. The rebuild decision (is_fresh) and `aishell check` (chain_status) both ask this, so
// what check says and what the next run does cannot disagree. generation: the record's, for an
// ext (setup --force bumps it); none for the base (setup --force builds that at once).
std::vector<std::string> stale_reasons(const ChainState& s, const std::optional<ChainBuild>& b, const ContextMemo& memo,
                                       std::optional<std::uint64_t> generation) {
    if (!b || !b->custom) return {"not built yet"};
    std::vector<std::string> why;
    auto now = s.named(b->name);
    if (!now) why.push_back(b->name + " is not in the store");
    else if (now->digest != b->manifest) why.push_back(b->name + " names another image than the one the chain built");
    if (b->content_hash != memo.content_hash) {
        if (b->dockerfile_hash.empty() || memo.dockerfile_hash.empty())
            why.push_back("its Dockerfile or a file in its context changed");
        else if (b->dockerfile_hash != memo.dockerfile_hash)
            why.push_back("its Dockerfile changed");
        else
            why.push_back("a file in its context changed");
    }
    const auto from_now = from_digests(s, memo);
    if (b->from != from_now) {
        bool said = false;
        for (const auto& [name, digest] : from_now) {
            auto was = b->from.find(name);
            if (was == b->from.end() || was->second == digest) continue;  // a new FROM is a Dockerfile change
            why.push_back(digest.empty() ? name + " is not in the store" : name + " moved on since it was built");
            said = true;
        }
        if (!said && b->content_hash == memo.content_hash) why.push_back("the images its FROM lines name changed");
    }
    if (generation && b->generation != *generation) why.push_back("`aishell setup --force` marked it for a rebuild");
    return why;
}

bool is_fresh(const ChainState& s, const std::optional<ChainBuild>& b, const ContextMemo& memo,
              std::optional<std::uint64_t> generation) {
    return stale_reasons(s, b, memo, generation).empty();
}

// What the labels say: one hash over the context and the FROM images' digests.
std::string input_hash(const std::string& content_hash, const std::map<std::string, std::string>& from) {
    oci::Sha256 h;
    hash_field(h, "aishell-chain-input-1");
    hash_field(h, content_hash);
    for (const auto& [name, digest] : from) {
        hash_field(h, name);
        hash_field(h, digest);
    }
    return h.finish().str();
}

// ---- locks and records ----------------------------------------------------------------------

// The build lock of one chain step (<store>/chain/<name>.lock), held while that image is
// checked and built, so two runs started together build it once; the second waits and says so.
// The store lock is held only while the index and the record are written. An ext build holds
// the base's lock shared (LockMode::Shared): the base is not rebuilt under it.
enum class LockMode { Exclusive = LOCK_EX, Shared = LOCK_SH };

UniqueFd take_build_lock(const oci::Store& store, const std::string& name, ChainStep step, ChainProgress* progress,
                         LockMode mode = LockMode::Exclusive) {
    fs::path path = chain_dir(store) / (name + ".lock");
    UniqueFd fd = open_file(path, O_RDWR | O_CREAT, 0600);
    const int how = static_cast<int>(mode);
    if (::flock(fd.get(), how | LOCK_NB) == 0) return fd;
    if (errno != EWOULDBLOCK) throw_errno("lock", path.string());
    if (progress) progress->waiting(step);
    while (::flock(fd.get(), how) < 0)
        if (errno != EINTR) throw_errno("lock", path.string());
    return fd;
}

using RecordChange = std::function<void(ChainRecord&, oci::Store&)>;

// Read, change and write the record under the store lock the caller holds.
void change_record(oci::Store& store, const oci::StoreLock& lock, const RecordChange& change) {
    ChainRecord r = read_chain_record(store);
    ChainRecord before = r;
    change(r, store);
    if (r != before) write_chain_record(store, lock, r);
}

// Read, change and write the record under the store lock (other projects' runs write it too).
void update_record(oci::Store& store, const RecordChange& change) {
    oci::StoreLock lock = store.lock_exclusive();
    change_record(store, lock, change);
}

void remember_memo(oci::Store& store, const ChainState& s, const TierFiles& files, const ContextMemo& memo) {
    auto it = s.record.contexts.find(files.context.string());
    if (it != s.record.contexts.end() && it->second == memo) return;
    if (memo.fingerprint.empty()) return;  // nothing a later run could reuse
    update_record(store, [&](ChainRecord& r, oci::Store&) { r.contexts[files.context.string()] = memo; });
}

// aishell:base becomes (again) the foundation's manifest under a second name; a custom base it
// named loses its name (its blobs go at the next prune).
void alias_base(oci::Store& store) {
    update_record(store, [](ChainRecord& r, oci::Store& st) {
        auto foundation = st.find_image(kFoundationImage);
        if (!foundation) return;
        st.tag_image(kBaseImage, foundation->descriptor);
        ChainBuild b;
        b.name = std::string(kBaseImage);
        b.manifest = foundation->descriptor.digest;
        b.from = {{std::string(kFoundationImage), foundation->descriptor.digest.str()}};
        b.built_on = foundation->descriptor.digest.str();
        b.generation = r.generation;
        r.base = b;
    });
}

// Why aishell:base is not (yet) the foundation's alias the chain recorded; empty when it is.
std::vector<std::string> alias_reasons(const ChainState& s, const oci::Descriptor& foundation) {
    auto base = s.named(kBaseImage);
    if (!base) return {std::string(kBaseImage) + " is not in the store"};
    if (s.record.base && s.record.base->custom) return {"~/.aishell/Dockerfile is gone: aishell:base is still the image built from it"};
    if (!s.record.base) return {"the chain has no record of aishell:base yet"};
    if (base->digest != foundation.digest || s.record.base->manifest != foundation.digest)
        return {std::string(kFoundationImage) + " moved on"};
    return {};
}

bool base_is_alias(const ChainState& s, const oci::Descriptor& foundation) { return alias_reasons(s, foundation).empty(); }

// ---- building --------------------------------------------------------------------------------

struct TierBuild {
    ChainStep step;
    std::string name;
    TierFiles files;
    ContextMemo memo;
    std::string project;  // ext only
    bool no_cache = false;
};

// Builds the tier and records it: record(r, built) runs under the very store-lock hold that
// tags the image (BuildRequest::on_tagged). A prune takes that lock too, so it never sees the
// new aishell:ext-* name without the record vouching for it (it would take the ext for one the
// chain did not build, untag it and collect its blobs once the build's lease is gone, and the
// run would find its image gone).
void run_tier_build(oci::Store& store, const ChainState& s, const TierBuild& t, const ChainOptions& o,
                    const std::function<void(ChainRecord&, const ChainBuild&)>& record) {
    ChainBuild b;
    b.name = t.name;
    b.custom = true;
    b.content_hash = t.memo.content_hash;
    b.dockerfile_hash = t.memo.dockerfile_hash;
    b.from = from_digests(s, t.memo);
    if (!t.memo.final_from.empty()) b.built_on = b.from[t.memo.final_from];
    b.input_hash = input_hash(b.content_hash, b.from);
    b.generation = s.record.generation;

    BuildRequest req;
    req.context = t.files.context;
    req.dockerfile = t.files.dockerfile;
    req.context_excludes = t.files.excludes;
    req.tags = {t.name};
    req.no_cache = t.no_cache;
    req.quiet = true;  // the step output shows when a step fails; the progress says the rest
    req.pull = o.pull;
    req.on_tagged = [&](const oci::StoreLock& lock, const oci::Descriptor& manifest) {
        b.manifest = manifest.digest;
        change_record(store, lock, [&](ChainRecord& r, oci::Store&) { record(r, b); });
    };
    if (t.step == ChainStep::Base) {
        req.labels[kBaseDockerfileHashLabel] = b.input_hash;
        req.labels[kBaseFoundationIdLabel] = s.named(kFoundationImage)->digest.str();
    } else {
        req.labels[kExtensionHashLabel] = b.input_hash;
        req.labels[kExtBaseIdLabel] = b.built_on;
        req.labels[kProjectPathLabel] = t.project;
    }
    const auto start = std::chrono::steady_clock::now();
    // Ctrl-C is the build's from the moment the progress says "Building...": held here, it
    // stops the build at its first checkpoint (exit 130, the store as it was). Unheld until
    // build_image blocked it, one typed in those few milliseconds killed aishell by its default
    // action (the spinner's thread start alone takes ~5 ms).
    HeldSignals held;
    if (o.progress) o.progress->building(t.step);
    try {
        build_image(store, req);
    } catch (Error& e) {
        if (o.progress) o.progress->failed(t.step);
        e.add_context("build " + t.files.dockerfile.string());
        if (e.hint().empty())
            e.set_hint("fix " + t.files.dockerfile.string() + " and run again; the previous image is kept");
        throw;
    }
    if (o.progress) o.progress->built(t.step, std::chrono::steady_clock::now() - start);
}

// Checks the base under its build lock (another run may have built it meanwhile), builds it
// when stale, and records it.
void build_base_locked(oci::Store& store, const TierFiles& files, const ChainOptions& o, bool force_no_cache) {
    UniqueFd lock = take_build_lock(store, "base", ChainStep::Base, o.progress);
    ChainState s = load_state(store);
    require_foundation(s);
    ContextMemo memo = context_memo(store, s.record, files, kBaseImage);
    if (!force_no_cache && is_fresh(s, s.record.base, memo, std::nullopt)) {
        remember_memo(store, s, files, memo);
        return;
    }
    run_tier_build(store, s, {ChainStep::Base, std::string(kBaseImage), files, memo, {}, force_no_cache}, o,
                   [&](ChainRecord& r, const ChainBuild& built) {
                       r.base = built;
                       r.base->generation = r.generation;
                       if (!memo.fingerprint.empty()) r.contexts[files.context.string()] = memo;
                   });
}

fs::path home_of(const ChainOptions& o) { return o.home.empty() ? home_dir() : o.home; }

// The base tier's files: ~/.aishell/Dockerfile with ~/.aishell as context, certs.d left out.
// One place, so a run, setup and check all see the same inputs.
std::optional<TierFiles> base_tier_files(const ChainOptions& o) {
    return tier_files(home_of(o) / ".aishell", kBaseContextExcludes);
}

// aishell:base as the chain wants it: built from ~/.aishell/Dockerfile when it exists and
// anything it depends on changed, else the foundation's alias.
void ensure_base(oci::Store& store, ChainState& s, const ChainOptions& o) {
    oci::Descriptor foundation = require_foundation(s);
    auto files = base_tier_files(o);
    if (!files) {
        if (!base_is_alias(s, foundation)) {
            alias_base(store);
            s = load_state(store);
        }
        return;
    }
    ContextMemo memo = context_memo(store, s.record, *files, kBaseImage);
    if (is_fresh(s, s.record.base, memo, std::nullopt)) {
        remember_memo(store, s, *files, memo);
        return;
    }
    build_base_locked(store, *files, o, false);
    s = load_state(store);
}

// The project's ext when it has a .aishell/Dockerfile (and that is not ~/.aishell's own).
std::optional<TierFiles> ext_files(const fs::path& project, const ChainOptions& o) {
    auto files = tier_files(project / ".aishell");
    if (!files) return std::nullopt;
    auto home = real_path(home_of(o) / ".aishell");
    if (home && *home == files->context) return std::nullopt;  // the project is $HOME: that file is the base's
    return files;
}

std::string ext_name_of(const ChainState& s, const std::string& project) {
    auto it = s.record.exts.find(project);
    if (it != s.record.exts.end()) return it->second.name;  // no SHA-256 on a warm run
    return ext_image_name(project);
}

ProjectImage ensure_ext(oci::Store& store, ChainState& s, const std::string& project, const TierFiles& files,
                        const ChainOptions& o) {
    const std::string name = ext_name_of(s, project);
    auto recorded = [&](const ChainState& st) -> std::optional<ChainBuild> {
        auto it = st.record.exts.find(project);
        if (it == st.record.exts.end()) return std::nullopt;
        return it->second;
    };
    ContextMemo memo = context_memo(store, s.record, files, name);
    if (!o.rebuild && is_fresh(s, recorded(s), memo, s.record.generation)) {
        remember_memo(store, s, files, memo);
        return {name, *s.named(name), project};
    }
    UniqueFd lock = take_build_lock(store, "ext-" + name.substr(kExtImagePrefix.size()), ChainStep::Ext, o.progress);
    // The FROM digests the ext records (its aishell.base.id label, the record's `from`) are read
    // from this state, and the build resolves FROM aishell:base later: another project's run
    // rebuilding the base in between made them name a base the ext was not built on. Holding
    // the base's build lock shared until the ext is recorded keeps the base where it is (a base
    // build waits, and says so). Lock order: ext, then base; a base build takes no ext lock.
    UniqueFd base_lock = take_build_lock(store, "base", ChainStep::Base, o.progress, LockMode::Shared);
    s = load_state(store);
    memo = context_memo(store, s.record, files, name);
    const auto was = recorded(s);
    if (o.rebuild || !is_fresh(s, was, memo, s.record.generation)) {
        // setup --force (a generation bump) rebuilds without the step cache, as --rebuild does:
        // with the cache, an ext whose inputs did not move would come back unchanged.
        const bool no_cache = o.rebuild || (was && was->generation != s.record.generation);
        run_tier_build(store, s, {ChainStep::Ext, name, files, memo, project, no_cache}, o,
                       [&](ChainRecord& r, const ChainBuild& built) {
                           r.exts[project] = built;
                           if (!memo.fingerprint.empty()) r.contexts[files.context.string()] = memo;
                       });
        s = load_state(store);
    } else {
        remember_memo(store, s, files, memo);
    }
    auto image = s.named(name);
    if (!image) throw Error(name + " disappeared from the store while it was being used", "run the command again");
    return {name, *image, project};
}

// A project whose .aishell/Dockerfile is gone has no ext any more: its name goes, as the base's
// does when ~/.aishell/Dockerfile goes.
void drop_ext(oci::Store& store, const ChainState& s, const std::string& project) {
    if (!s.record.exts.count(project)) return;
    update_record(store, [&](ChainRecord& r, oci::Store& st) {
        auto it = r.exts.find(project);
        if (it == r.exts.end()) return;
        auto named = st.find_image(it->second.name);
        if (named && named->descriptor.digest == it->second.manifest) st.untag_image(it->second.name);
        r.exts.erase(it);
    });
}

}  // namespace

fs::path find_project(const fs::path& cwd) {
    auto real = real_path(cwd);
    if (!real) throw_errno("resolve", cwd.string());
    const uid_t caller = ::geteuid();
    for (fs::path dir = *real;; dir = dir.parent_path()) {
        struct stat st {};
        if (::lstat((dir / ".git").c_str(), &st) == 0) {
            if (owns_repository(dir, st, caller)) return dir;
            break;  // someone else's repository (git stops there too): not the project, nor above it
        }
        if (dir == dir.root_path() || dir.parent_path() == dir) break;
    }
    return *real;
}

ProjectImage image_for_project(oci::Store& store, const fs::path& cwd, const ChainOptions& options) {
    const fs::path project = find_project(cwd);
    ChainState s = load_state(store);
    ensure_base(store, s, options);
    auto files = ext_files(project, options);
    if (!files) {
        drop_ext(store, s, project.string());
        auto base = s.named(kBaseImage);
        if (!base) throw Error(std::string(kBaseImage) + " is not in the store", "run `aishell setup`");
        return {std::string(kBaseImage), *base, project};
    }
    return ensure_ext(store, s, project.string(), *files, options);
}

namespace {

// One tier's status; an input the chain cannot read (a Dockerfile that does not parse, a
// context file it may not open) is what the next run would fail on.
template <typename F>
TierStatus tier_status(std::string name, F&& reasons) {
    TierStatus t;
    t.name = std::move(name);
    try {
        t.reasons = reasons();
    } catch (const Error& e) {
        t.error = e.message();
        t.error_hint = e.hint();
    }
    t.stale = !t.reasons.empty() || !t.error.empty();
    return t;
}

}  // namespace

ChainStatus chain_status(const oci::Store& store, const fs::path& cwd, const ChainOptions& options) {
    const ChainState s = load_state(store);
    ChainStatus st;
    st.project = find_project(cwd);
    auto base_files = base_tier_files(options);
    st.custom_base = base_files.has_value();
    if (base_files) st.base_dockerfile = base_files->dockerfile;
    auto foundation = s.named(kFoundationImage);
    st.foundation = foundation.has_value();
    st.base = tier_status(std::string(kBaseImage), [&]() -> std::vector<std::string> {
        if (!foundation) return {std::string(kFoundationImage) + " is not in the store"};
        if (!base_files) return alias_reasons(s, *foundation);
        return stale_reasons(s, s.record.base, context_memo(store, s.record, *base_files, kBaseImage, MemoWrites::ReadOnly), std::nullopt);
    });
    if (auto base = s.named(kBaseImage)) st.base.manifest = base->digest;

    auto files = ext_files(st.project, options);
    if (!files) return st;
    st.ext_dockerfile = files->dockerfile;
    const std::string project = st.project.string();
    const std::string ext_name = ext_name_of(s, project);
    st.ext = tier_status(ext_name, [&] {
        ContextMemo memo = context_memo(store, s.record, *files, ext_name, MemoWrites::ReadOnly);
        auto it = s.record.exts.find(project);
        std::optional<ChainBuild> recorded;
        if (it != s.record.exts.end()) recorded = it->second;
        auto why = stale_reasons(s, recorded, memo, s.record.generation);
        // The next run rebuilds a stale base first; an ext on it is then built on a new image.
        bool on_base = std::find(memo.from_images.begin(), memo.from_images.end(), kBaseImage) != memo.from_images.end();
        if (on_base && st.base.stale && recorded && recorded->custom)
            why.push_back(std::string(kBaseImage) + ", which it is built on, is stale");
        return why;
    });
    if (auto ext = s.named(st.ext->name)) st.ext->manifest = ext->digest;
    return st;
}

SetupChainResult setup_chain(oci::Store& store, bool force, const ChainOptions& options) {
    if (force) update_record(store, [](ChainRecord& r, oci::Store&) { ++r.generation; });
    ChainState s = load_state(store);
    oci::Descriptor foundation = require_foundation(s);
    auto files = base_tier_files(options);
    SetupChainResult result;
    result.custom_base = files.has_value();
    if (!files || !s.named(kBaseImage)) {
        // Plain setup never builds: a base that is not there yet is the alias until a run builds it.
        if (!base_is_alias(s, foundation)) alias_base(store);
    }
    if (files && force) {
        build_base_locked(store, *files, options, true);
        result.built = true;
    }
    return result;
}

}  // namespace aishell::composer
