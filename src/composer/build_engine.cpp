// The build engine (see build_engine.hpp).
#include "composer/build_engine.hpp"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/held_signals.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_copy.hpp"
#include "composer/build_fetch.hpp"
#include "composer/build_mounts.hpp"
#include "composer/build_step.hpp"
#include "composer/dockerignore.hpp"
#include "composer/instructions.hpp"
#include "composer/step_cache.hpp"
#include "oci/image.hpp"
#include "oci/json_text.hpp"
#include "oci/lease.hpp"
#include "oci/media_types.hpp"
#include "oci/owner_table.hpp"
#include "runtime/capabilities.hpp"
#include "runtime/launch.hpp"
#include "runtime/mounts.hpp"
#include "runtime/process.hpp"
#include "runtime/seccomp.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A stage's image as the steps change it.
struct ImageState {
    json config;                           // the whole config document
    std::vector<oci::Descriptor> layers;   // bottom first
    std::vector<oci::Digest> diff_ids;
    oci::Digest key;                       // cache chain key of this state
    bool cmd_set = false;                  // CMD given in this stage (ENTRYPOINT then keeps it)
};

std::string rfc3339(std::int64_t seconds) {
    std::time_t t = static_cast<std::time_t>(seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

// "SIGINT", or the number when the C library has no name for it.
std::string sigabbrev_or_number(int sig) {
    if (const char* name = ::sigabbrev_np(sig)) return std::string("SIG") + name;
    return "signal " + std::to_string(sig);
}

json& cfg(ImageState& s) {
    if (!s.config.contains("config") || !s.config["config"].is_object()) s.config["config"] = json::object();
    return s.config["config"];
}

std::vector<std::string> env_list(const ImageState& s) {
    if (!s.config.contains("config") || !s.config["config"].contains("Env") || !s.config["config"]["Env"].is_array())
        return {};
    return s.config["config"]["Env"].get<std::vector<std::string>>();
}

void set_env(ImageState& s, const std::string& key, const std::string& value) {
    auto env = env_list(s);
    bool found = false;
    for (auto& e : env)
        if (e.substr(0, e.find('=')) == key) {
            e = key + "=" + value;
            found = true;
        }
    if (!found) env.push_back(key + "=" + value);
    cfg(s)["Env"] = env;
}

std::vector<std::string> shell_of(const ImageState& s) {
    if (s.config.contains("config") && s.config["config"].contains("Shell") && s.config["config"]["Shell"].is_array())
        return s.config["config"]["Shell"].get<std::vector<std::string>>();
    return {"/bin/sh", "-c"};
}

std::string cfg_string(const ImageState& s, const char* key) {
    if (!s.config.contains("config")) return {};
    const json& c = s.config["config"];
    return c.contains(key) && c[key].is_string() ? c[key].get<std::string>() : std::string();
}

std::string lower_ascii(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string layer_media_type_oci(const std::string& mt) {
    if (mt == oci::media_type::kDockerLayerGzip) return std::string(oci::media_type::kOciLayerGzip);
    if (mt == oci::media_type::kDockerLayerForeignGzip) return std::string(oci::media_type::kOciLayerNondistGzip);
    return mt;
}

// What a failed build takes back: exactly what it wrote, recorded as it was written -- the
// blobs and layer trees its lease names as made (by this process, the step helper and
// `__unpack`: oci/lease.hpp), its cache entries, its tags and the id mapping it recorded -- less
// what another command leases and the blobs an image or a cache entry references. Never a
// comparison of the store before and after: other commands write to it meanwhile, and a tree
// or blob that appeared is not this build's to remove (issue 10: an exec's layers vanished).
class Rollback {
public:
    // recorded_mapping: this build wrote the id mapping into meta.json (it was absent before);
    // meta_existed: meta.json existed before.
    Rollback(oci::Store& store, const runtime::IdMapping& mapping, std::shared_ptr<oci::Lease> lease,
             bool recorded_mapping, bool meta_existed)
        : store_(store), mapping_(mapping), lease_(std::move(lease)), recorded_mapping_(recorded_mapping),
          meta_existed_(meta_existed) {}
    // A cache entry this build wrote: removed only while it is still that file (another build
    // may have replaced it by one of its own since).
    void cache_entry(const std::string& path) {
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0) cache_entries_.push_back({path, st.st_dev, st.st_ino});
    }
    // A tag this build set: put back (previous, or none) while it still names ours.
    void tagged(const std::string& name, std::optional<oci::Descriptor> previous, const oci::Descriptor& ours) {
        tags_.push_back({name, std::move(previous), ours});
    }
    // A file or (then empty) directory this build created outside the areas listed above.
    void added_path(const fs::path& path) { added_paths_.push_back(path); }
    void commit() { committed_ = true; }
    ~Rollback() {
        if (committed_) return;
        try {
            std::vector<fs::path> trash;
            {
                auto lock = store_.lock_exclusive();
                restore_tags();
                for (const auto& e : cache_entries_) {
                    struct stat st {};
                    if (::lstat(e.path.c_str(), &st) == 0 && st.st_dev == e.dev && st.st_ino == e.ino) ::unlink(e.path.c_str());
                }
                for (const auto& p : added_paths_)
                    if (::unlink(p.c_str()) != 0 && errno == EISDIR) ::rmdir(p.c_str());
                const std::vector<oci::LeaseEntry> made = lease_->entries();
                std::size_t others = 0;
                trash = take_out_trees(made, others);
                remove_blobs(made);
                if (recorded_mapping_ && others == 0 && !any_layer_tree()) forget_mapping();
            }
            for (const auto& t : trash) runtime::remove_tree(mapping_, t.string());
        } catch (const std::exception& e) {
            std::cerr << "aishell: warning: cleaning up after the failed build: " << e.what() << "\n";
        }
    }

private:
    struct FileId {
        std::string path;
        dev_t dev;
        ino_t ino;
    };
    struct Tag {
        std::string name;
        std::optional<oci::Descriptor> previous;
        oci::Descriptor ours;
    };

    void restore_tags() {
        for (auto it = tags_.rbegin(); it != tags_.rend(); ++it) {
            auto now = store_.find_image(it->name);
            if (!now || now->descriptor.digest != it->ours.digest) continue;  // retagged by someone else
            if (it->previous) store_.tag_image(it->name, *it->previous);
            else store_.untag_image(it->name);
        }
    }

    // The trees this build made that no other lease holds leave layers/ at once (renamed into
    // tmp/, with their owner tables removed), under the leases' removal lock; they are deleted
    // afterwards, outside every lock. others: how many other commands hold a lease.
    std::vector<fs::path> take_out_trees(const std::vector<oci::LeaseEntry>& made, std::size_t& others) {
        oci::LeaseRemovalLock held(store_);
        const oci::LiveLeases leased = oci::read_live_leases(held, lease_->path());
        others = leased.holders;
        std::vector<fs::path> trash;
        for (const auto& e : made) {
            if (!e.made || e.kind != oci::LeaseKind::Layer || leased.layers.count(e.name)) continue;
            const fs::path tree = store_.layers_dir() / e.name;
            const fs::path to = store_.tmp_dir() / ("rollback-" + e.name.substr(0, 12) + "-" + random_hex(8));
            if (::rename(tree.c_str(), to.c_str()) == 0) trash.push_back(to);
            else if (errno != ENOENT)  // e.g. EACCES: a tree whose root its own RUN made 0555
                std::cerr << "aishell: warning: cleaning up after the failed build: move " << tree.string() << " to "
                          << to.string() << ": " << std::strerror(errno) << "\n";
            ::unlink(oci::layer_owner_table_path(store_.layers_dir(), e.name).c_str());
        }
        return trash;
    }

    // The blobs it made, unless an image, a cache entry or another command's lease still needs them.
    void remove_blobs(const std::vector<oci::LeaseEntry>& made) {
        oci::GcOptions gc;
        gc.only_blobs.emplace();
        for (const auto& e : made)
            if (e.made && e.kind == oci::LeaseKind::Blob) gc.only_blobs->push_back(oci::Digest::parse(e.name));
        if (gc.only_blobs->empty()) return;
        gc.extra_roots = step_cache_roots(store_);
        gc.own_lease = lease_->path();
        oci::collect_garbage(store_, gc);
    }

    bool any_layer_tree() const {
        std::error_code ec;
        for (fs::directory_iterator it(store_.layers_dir(), ec), end; !ec && it != end; it.increment(ec))
            if (it->is_directory(ec)) return true;
        return false;
    }

    // The id mapping this build recorded, once nothing is unpacked for it and nobody else uses
    // the store: meta.json as it was.
    void forget_mapping() {
        store_.erase_meta("idmap");
        const fs::path meta = store_.root() / "meta.json";
        if (!meta_existed_ && read_file_if_exists(meta, 1 << 20).value_or("{}\n") == "{}\n") ::unlink(meta.c_str());
    }

    oci::Store& store_;
    runtime::IdMapping mapping_;
    std::shared_ptr<oci::Lease> lease_;
    bool recorded_mapping_, meta_existed_;
    std::vector<FileId> cache_entries_;
    std::vector<Tag> tags_;
    std::vector<fs::path> added_paths_;  // removed in this order
    bool committed_ = false;
};

// A step's work dir under tmp/, removed on destruction: by the step helper when it runs (inside
// the namespace, where a RUN's sub-id owned leftovers are removable, and after the engine has
// moved on), else here.
class WorkDir {
public:
    WorkDir(const oci::Store& store, StepHelper& helper)
        : path_(store.tmp_dir() / ("build-" + random_hex(12))), helper_(helper) {
        make_dirs(path_, 0700);
    }
    WorkDir(const WorkDir&) = delete;
    WorkDir& operator=(const WorkDir&) = delete;
    ~WorkDir() {
        try {
            helper_.remove(path_);
        } catch (const std::exception& e) {
            std::cerr << "aishell: warning: " << e.what() << "\n";
        }
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
    StepHelper& helper_;
};

// Redirects stdout and stderr into a file while a quiet build runs a step; shows it on failure.
class QuietOutput {
public:
    explicit QuietOutput(bool quiet) {
        if (!quiet) return;
        char tmpl[] = "/tmp/aishell-build-XXXXXX";
        file_ = UniqueFd(::mkstemp(tmpl));
        if (!file_) return;
        ::unlink(tmpl);
        std::cout.flush();
        std::cerr.flush();
        saved_out_ = UniqueFd(::dup(1));
        saved_err_ = UniqueFd(::dup(2));
        ::dup2(file_.get(), 1);
        ::dup2(file_.get(), 2);
    }
    ~QuietOutput() { restore(); }
    void restore() {
        if (!saved_out_) return;
        ::dup2(saved_out_.get(), 1);
        ::dup2(saved_err_.get(), 2);
        saved_out_.reset();
        saved_err_.reset();
    }
    void show() {
        restore();
        if (!file_) return;
        ::lseek(file_.get(), 0, SEEK_SET);
        char buf[8192];
        ssize_t n;
        while ((n = ::read(file_.get(), buf, sizeof buf)) > 0) (void)!::write(2, buf, static_cast<std::size_t>(n));
    }

private:
    UniqueFd file_, saved_out_, saved_err_;
};

class Builder {
public:
    Builder(oci::Store& store, const BuildRequest& req)
        : signals_(),
          lease_(oci::Lease::create(store, "build")),
          store_(store.with_lease(lease_)),
          req_(req),
          cache_(store_),
          mapping_known_before_(store_.get_meta("idmap").has_value()),
          meta_existed_(fs::exists(store_.root() / "meta.json")),
          mapping_(runtime::store_mapping(store_)),
          rollback_(store_, mapping_, lease_, !mapping_known_before_, meta_existed_),
          helper_(store_, mapping_) {}

    BuildResult run() {
        df_ = load_dockerfile(req_.dockerfile.string());
        global_scope_ = global_arg_scope(df_, req_.build_args, req_.platform);
        load_ignore();
        const Stage& target = target_stage(df_, req_.target);
        std::set<int> needed;
        collect_needed(target.index, needed);
        for (int i : needed) total_steps_ += 1 + static_cast<int>(df_.stages[i].instructions.size());
        for (int i : needed) {
            current_stage_index_ = i;
            stage_states_[i] = build_stage(df_.stages[i]);
        }
        stop_if_signalled("writing the image");
        ImageState& final_state = stage_states_.at(target.index);
        for (const auto& [key, value] : req_.labels) {
            if (!cfg(final_state).contains("Labels") || !cfg(final_state)["Labels"].is_object())
                cfg(final_state)["Labels"] = json::object();
            cfg(final_state)["Labels"][key] = value;
        }
        BuildResult result = write_image(final_state);
        stop_if_signalled("writing the image");
        rollback_.commit();
        if (digest_memo_) digest_memo_->save();  // only a build that succeeded adds to the store
        return result;
    }

private:
    // ---- stages ------------------------------------------------------------------------------
    std::optional<int> stage_by_name(const std::string& name, int before) const {
        std::string n = lower_ascii(name);
        for (const auto& s : df_.stages) {
            if (s.index >= before) break;
            if (!s.name.empty() && s.name == n) return s.index;
        }
        if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) {
            int i = std::stoi(n);
            if (i < before) return i;
        }
        return std::nullopt;
    }

    void collect_needed(int index, std::set<int>& needed) {
        if (!needed.insert(index).second) return;
        const Stage& s = df_.stages[index];
        if (auto dep = stage_by_name(expand_from(df_, s, global_scope_), index)) collect_needed(*dep, needed);
        for (const auto& ins : s.instructions) {
            if (auto* c = std::get_if<CopyInstr>(&ins.command); c && !c->from.empty())
                if (auto dep = stage_by_name(c->from, index)) collect_needed(*dep, needed);
            if (auto* r = std::get_if<RunInstr>(&ins.command))
                for (const auto& m : r->mounts)
                    if (auto f = m.options.find("from"); f != m.options.end() && !f->second.empty())
                        if (auto dep = stage_by_name(f->second, index)) collect_needed(*dep, needed);
        }
    }

    void load_ignore() {
        if (auto file = find_dockerignore(req_.context, req_.dockerfile)) {
            ignore_patterns_ = read_dockerignore(read_file(*file, 4 * 1024 * 1024), file->string());
            matcher_.emplace(ignore_patterns_);
        }
    }

    ImageState state_from_image(const std::string& ref) {
        std::optional<oci::ImageEntry> entry = store_.find_image(ref);
        if (!entry && req_.pull) entry = store_.find_image(req_.pull(store_, ref));
        if (!entry) throw Error("image " + ref + " is not in the store", "aishell pull " + ref);
        oci::Image image = oci::load_image(store_, *entry);
        lease_->add(oci::image_lease_entries(image));
        ImageState s;
        s.config = image.config.json();
        s.layers = image.manifest.layers;
        s.diff_ids = image.config.diff_ids();
        s.key = step_key(image.manifest_descriptor.digest, {"image"});
        return s;
    }

    ImageState scratch_state() const {
        ImageState s;
        auto p = oci::Platform::host();
        s.config = {{"architecture", p.architecture}, {"os", p.os}, {"config", json::object()},
                    {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}}, {"history", json::array()}};
        if (!p.variant.empty()) s.config["variant"] = p.variant;
        s.key = step_key(oci::sha256_of("scratch"), {"scratch"});
        return s;
    }

    ImageState build_stage(const Stage& stage) {
        std::string base = expand_from(df_, stage, global_scope_);
        step_line("FROM " + base + (stage.name.empty() ? "" : " AS " + stage.name));
        ImageState s;
        if (auto dep = stage_by_name(base, stage.index)) s = stage_states_.at(*dep);
        else if (lower_ascii(base) == "scratch") s = scratch_state();
        else s = state_from_image(base);
        s.cmd_set = false;
        args_.clear();
        // BuildKit (dockerfile2llb's toDispatchState) gives every stage whose base has no PATH
        // the default one, in the image's config too, not only in RUN's environment.
        bool has_path = false;
        for (const auto& e : env_list(s)) has_path = has_path || e.substr(0, e.find('=')) == "PATH";
        if (!has_path) set_env(s, "PATH", runtime::kDefaultPath);
        run_onbuild_triggers(s);
        for (const auto& ins : stage.instructions) dispatch(s, ins);
        return s;
    }

    void run_onbuild_triggers(ImageState& s) {
        json& c = cfg(s);
        if (!c.contains("OnBuild") || !c["OnBuild"].is_array() || c["OnBuild"].empty()) return;
        std::string text = "FROM scratch\n";
        for (const auto& t : c["OnBuild"]) text += t.get<std::string>() + "\n";
        c.erase("OnBuild");
        Dockerfile triggers = parse_dockerfile(text, "ONBUILD");
        for (const auto& ins : triggers.stages.at(0).instructions) {
            ++total_steps_;
            dispatch(s, ins);
        }
    }

    // ---- expansion ---------------------------------------------------------------------------
    // ENV wins over ARG of the same name, as BuildKit resolves them.
    std::map<std::string, std::string> expansion_env(const ImageState& s) const {
        std::map<std::string, std::string> env = args_;
        for (const auto& e : env_list(s)) {
            auto eq = e.find('=');
            env[e.substr(0, eq)] = eq == std::string::npos ? "" : e.substr(eq + 1);
        }
        return env;
    }

    std::string expand(const ImageState& s, const std::string& word) const {
        return process_word(word, env_from_map(expansion_env(s)), df_.directives.escape);
    }

    // ---- steps -------------------------------------------------------------------------------
    void step_line(const std::string& text, bool cached = false) {
        ++step_;
        if (req_.quiet) return;
        std::string line = text;
        if (line.size() > 200) line = line.substr(0, 197) + "...";
        std::cerr << (cached ? "CACHED " : "") << "[" << step_ << "/" << total_steps_ << "] " << line << std::endl;
    }

    std::string now_created() const {
        if (req_.source_date_epoch) return rfc3339(*req_.source_date_epoch);
        return rfc3339(std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count());
    }

    void add_history(ImageState& s, const std::string& created, const std::string& created_by, bool empty) {
        json h = {{"created", created}, {"created_by", created_by}, {"comment", "buildkit.dockerfile.v0"}};
        if (empty) h["empty_layer"] = true;
        if (!s.config.contains("history") || !s.config["history"].is_array()) s.config["history"] = json::array();
        s.config["history"].push_back(h);
        s.config["created"] = created;
    }

    // A metadata step: the config change is applied by the caller; the cache keeps the date.
    void metadata_step(ImageState& s, const std::string& text) {
        std::vector<std::string> parts{"meta", text};
        add_epoch_part(parts);
        oci::Digest key = step_key(s.key, parts);
        std::optional<CacheEntry> hit = req_.no_cache ? std::nullopt : cache_.get(key);
        step_line(text, hit.has_value());
        std::string created = hit ? hit->created : now_created();
        if (!hit) rollback_.cache_entry(cache_.put(key, CacheEntry{created, std::nullopt}));
        add_history(s, created, text, true);
        s.key = key;
    }

    // SOURCE_DATE_EPOCH changes what a step makes (clamped mtimes, history dates): an entry
    // made without it, or with another value, must not serve the build.
    void add_epoch_part(std::vector<std::string>& parts) const {
        if (req_.source_date_epoch) parts.push_back("source-date-epoch=" + std::to_string(*req_.source_date_epoch));
    }

    // A layer step: a cache hit reuses the layer, a miss runs produce() which returns the layer.
    void layer_step(ImageState& s, const std::string& text, const std::vector<std::string>& key_parts,
                    const std::function<std::optional<StepLayer>()>& produce) {
        std::vector<std::string> parts{"layer", text, mapping_.to_string()};
        add_epoch_part(parts);
        parts.insert(parts.end(), key_parts.begin(), key_parts.end());
        oci::Digest key = step_key(s.key, parts);
        std::optional<CacheEntry> hit = req_.no_cache ? std::nullopt : cache_.get(key);
        if (hit && hit->layer) {
            // Lease, then look: the layer blob a hit names may have been taken back by the
            // rollback of the build that wrote the entry; then it is a miss.
            lease_->add({oci::LeaseEntry::blob(hit->layer->descriptor.digest)});
            if (!store_.has_blob(hit->layer->descriptor.digest)) hit.reset();
        }
        step_line(text, hit.has_value());
        CacheEntry entry;
        if (hit) {
            entry = *hit;
        } else {
            auto started = std::chrono::steady_clock::now();
            entry.created = now_created();
            entry.layer = produce();
            rollback_.cache_entry(cache_.put(key, entry));
            if (!req_.quiet) {
                auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
                std::cerr << "  done in " << ms.count() / 1000 << "." << (ms.count() % 1000) / 10 / 10 << (ms.count() % 100) / 10
                          << "s" << std::endl;
            }
        }
        if (entry.layer) {
            oci::Descriptor d = entry.layer->descriptor;
            s.layers.push_back(d);
            s.diff_ids.push_back(entry.layer->diff_id);
        }
        add_history(s, entry.created, text + " # buildkit", !entry.layer.has_value());
        s.key = key;
    }

    // Layer dir names (top first) of s, unpacked when missing.
    std::vector<std::string> layer_dirs(const ImageState& s) {
        oci::Image image;
        image.name = "build stage";
        image.manifest.layers = s.layers;
        json c = s.config;
        json ids = json::array();
        for (const auto& d : s.diff_ids) ids.push_back(d.str());
        c["rootfs"] = {{"type", "layers"}, {"diff_ids", ids}};
        image.config = oci::ImageConfig(c);
        return runtime::ensure_image_layers(store_, image, mapping_);
    }

    // The in-namespace half of a step, in the build's step helper (build_step.hpp).
    std::optional<StepLayer> run_helper(const fs::path& run_dir, json spec) {
        spec["store"] = store_.root().string();
        spec["lease"] = lease_->path().string();  // the helper records the step's blob and tree there
        spec["run_dir"] = run_dir.string();
        spec["compression"] = req_.compression;
        if (req_.source_date_epoch) spec["clamp"] = *req_.source_date_epoch;
        return helper_.run(spec);
    }

    // ---- instructions ------------------------------------------------------------------------
    // Stops the build at a checkpoint when SIGINT, SIGTERM or SIGHUP arrived (held pending
    // meanwhile: common/held_signals.hpp); the rollback then undoes what it wrote.
    void stop_if_signalled(const std::string& where) {
        if (int sig = signals_.take())
            throw Interrupted(where + ": interrupted by " + sigabbrev_or_number(sig),
                              "the build stopped; nothing was tagged and the store is as it was", sig);
    }

    void dispatch(ImageState& s, const Instruction& ins) {
        const std::string where = df_.filename + ":" + std::to_string(ins.line());
        const int announced_before = step_;
        try {
            stop_if_signalled("[" + std::to_string(step_ + 1) + "/" + std::to_string(total_steps_) + "] " +
                              ins.node.original.substr(0, 80));
            std::visit([&](const auto& c) { on(s, ins, c); }, ins.command);
        } catch (Error& e) {
            // An instruction that fails before its step line (COPY sources, expansion) is still
            // its own step, not the one before it. FROM's line is printed by the stage setup.
            const bool own_line_printed = step_ != announced_before || std::holds_alternative<FromInstr>(ins.command);
            const int step = own_line_printed ? step_ : announced_before + 1;
            const std::string label =
                "[" + std::to_string(step) + "/" + std::to_string(total_steps_) + "] " + ins.node.original.substr(0, 80);
            // A step that failed because the same signal stopped one of its helpers (they share
            // the terminal's process group) was interrupted, not broken.
            if (!dynamic_cast<const Interrupted*>(&e)) stop_if_signalled(label);
            if (e.message().rfind("[", 0) != 0) e.add_context(label + " (" + where + ")");
            throw;
        }
    }

    void on(ImageState&, const Instruction&, const FromInstr&) {}

    void on(ImageState& s, const Instruction& ins, const ArgInstr& a) {
        for (const auto& decl : a.args) {
            std::string name = expand(s, decl.name);
            std::optional<std::string> value;
            if (auto it = req_.build_args.find(name); it != req_.build_args.end()) value = it->second;
            else if (decl.value) value = expand(s, *decl.value);
            else if (auto g = global_scope_.find(name); g != global_scope_.end()) value = g->second;
            if (value) args_[name] = *value;
            else args_.erase(name);
        }
        (void)ins;
        ++step_;  // BuildKit records no history for ARG
        if (!req_.quiet) std::cerr << "[" << step_ << "/" << total_steps_ << "] " << ins.node.original << std::endl;
    }

    void on(ImageState& s, const Instruction&, const EnvInstr& e) {
        // Every pair expands with the environment from before the instruction (Docker and
        // BuildKit: `ENV A=1 B=${A}2` gives B=2 unless A was set earlier), then all are set.
        std::vector<std::pair<std::string, std::string>> pairs;
        for (const auto& kv : e.env) pairs.emplace_back(expand(s, kv.key), expand(s, kv.value));
        std::string text = "ENV";
        for (const auto& [key, value] : pairs) {
            set_env(s, key, value);
            text += " " + key + "=" + value;
        }
        metadata_step(s, text);
    }

    void on(ImageState& s, const Instruction&, const LabelInstr& l) {
        std::string text = "LABEL";
        for (const auto& kv : l.labels) {
            std::string key = expand(s, kv.key), value = expand(s, kv.value);
            if (!cfg(s).contains("Labels") || !cfg(s)["Labels"].is_object()) cfg(s)["Labels"] = json::object();
            cfg(s)["Labels"][key] = value;
            text += " " + key + "=" + value;
        }
        metadata_step(s, text);
    }

    void on(ImageState& s, const Instruction&, const MaintainerInstr& m) {
        s.config["author"] = m.name;
        metadata_step(s, "MAINTAINER " + m.name);
    }

    std::vector<std::string> command_args(const ImageState& s, const CommandLine& c) const {
        if (c.exec_form) return c.args;
        std::vector<std::string> argv = shell_of(s);
        std::string joined;
        for (const auto& a : c.args) joined += (joined.empty() ? "" : " ") + a;
        argv.push_back(joined);
        return argv;
    }

    static std::string json_words(const std::vector<std::string>& v) { return oci::json_key_text(json(v)); }

    void on(ImageState& s, const Instruction&, const CmdInstr& c) {
        auto argv = command_args(s, c.command);
        cfg(s)["Cmd"] = argv;
        s.cmd_set = true;
        metadata_step(s, "CMD " + json_words(argv));
    }

    void on(ImageState& s, const Instruction&, const EntrypointInstr& e) {
        auto argv = command_args(s, e.command);
        cfg(s)["Entrypoint"] = argv;
        if (!s.cmd_set) cfg(s).erase("Cmd");
        metadata_step(s, "ENTRYPOINT " + json_words(argv));
    }

    void on(ImageState& s, const Instruction&, const ShellInstr& sh) {
        cfg(s)["Shell"] = sh.shell;
        metadata_step(s, "SHELL " + json_words(sh.shell));
    }

    void on(ImageState& s, const Instruction&, const ExposeInstr& e) {
        std::string text = "EXPOSE";
        if (!cfg(s).contains("ExposedPorts") || !cfg(s)["ExposedPorts"].is_object()) cfg(s)["ExposedPorts"] = json::object();
        for (const auto& raw : e.ports)
            for (const auto& word : process_words(raw, env_from_map(expansion_env(s)), df_.directives.escape))
                for (const auto& port : exposed_ports(word)) {  // checked after expansion, ranges expanded
                    cfg(s)["ExposedPorts"][port] = json::object();
                    text += " " + port;
                }
        metadata_step(s, text);
    }

    void on(ImageState& s, const Instruction&, const VolumeInstr& v) {
        std::string text = "VOLUME";
        if (!cfg(s).contains("Volumes") || !cfg(s)["Volumes"].is_object()) cfg(s)["Volumes"] = json::object();
        for (const auto& raw : v.volumes) {
            std::string path = expand(s, raw);
            if (path.empty()) throw Error("VOLUME specified can not be an empty string");
            cfg(s)["Volumes"][path] = json::object();
            text += " " + path;
        }
        metadata_step(s, text);
    }

    void on(ImageState& s, const Instruction&, const UserInstr& u) {
        std::string user = expand(s, u.user);
        cfg(s)["User"] = user;
        metadata_step(s, "USER " + user);
    }

    void on(ImageState& s, const Instruction&, const StopsignalInstr& sig) {
        std::string value = expand(s, sig.signal);
        cfg(s)["StopSignal"] = value;
        metadata_step(s, "STOPSIGNAL " + value);
    }

    void on(ImageState& s, const Instruction&, const OnbuildInstr& o) {
        if (!cfg(s).contains("OnBuild") || !cfg(s)["OnBuild"].is_array()) cfg(s)["OnBuild"] = json::array();
        cfg(s)["OnBuild"].push_back(o.expression);
        metadata_step(s, "ONBUILD " + o.expression);
    }

    void on(ImageState& s, const Instruction&, const HealthcheckInstr& h) {
        json hc = json::object();
        if (h.none) {
            hc["Test"] = {"NONE"};
        } else {
            std::vector<std::string> test;
            if (h.test.exec_form) {
                test = {"CMD"};
                test.insert(test.end(), h.test.args.begin(), h.test.args.end());
            } else {
                std::string joined;
                for (const auto& a : h.test.args) joined += (joined.empty() ? "" : " ") + a;
                test = {"CMD-SHELL", joined};
            }
            hc["Test"] = test;
            if (h.interval) hc["Interval"] = h.interval->count();
            if (h.timeout) hc["Timeout"] = h.timeout->count();
            if (h.start_period) hc["StartPeriod"] = h.start_period->count();
            if (h.start_interval) hc["StartInterval"] = h.start_interval->count();
            if (h.retries) hc["Retries"] = *h.retries;
        }
        cfg(s)["Healthcheck"] = hc;
        metadata_step(s, "HEALTHCHECK " + oci::json_key_text(hc["Test"]));
    }

    std::string absolute_in_workdir(const ImageState& s, const std::string& path) const {
        if (!path.empty() && path[0] == '/') return path;
        std::string wd = cfg_string(s, "WorkingDir");
        if (wd.empty()) wd = "/";
        return (fs::path(wd) / path).string();
    }

    // BuildKit's system.NormalizeWorkdir (as Docker's classic builder): an absolute path is kept
    // as written (`/a/b/` stays `/a/b/`), a relative one is joined to the current WORKDIR and
    // cleaned as Go's path.Join does.
    std::string normalize_workdir(const ImageState& s, const std::string& requested) const {
        if (!requested.empty() && requested[0] == '/') return requested;
        std::string wd = cfg_string(s, "WorkingDir");
        std::string joined = (fs::path("/") / wd / requested).lexically_normal().string();
        while (joined.size() > 1 && joined.back() == '/') joined.pop_back();
        return joined;
    }

    void on(ImageState& s, const Instruction&, const WorkdirInstr& w) {
        const std::string path = normalize_workdir(s, expand(s, w.path));
        cfg(s)["WorkingDir"] = path;
        std::string text = "WORKDIR " + path;
        if (path == "/") {
            metadata_step(s, text);
            return;
        }
        // BuildKit creates the directory (a layer only when it was missing) for the image's USER
        // (llb.Mkdir WithUser: its uid and primary group; a bare uid N is N:N), so a later
        // `RUN touch x` as that user works there. A user the image does not know makes it
        // root's, as in BuildKit and Docker's classic builder (a RUN as that user fails).
        json mkdir = {{"path", fs::path(path).lexically_normal().string()}};
        std::vector<std::string> key_parts;
        if (auto owner = workdir_owner(s, cfg_string(s, "User"))) {
            mkdir["chown"] = {owner->uid, owner->gid};
            key_parts.push_back("owner=" + std::to_string(owner->uid) + ":" + std::to_string(owner->gid));
        }
        layer_step(s, text, key_parts, [&]() -> std::optional<StepLayer> {
            WorkDir run(store_, helper_);
            json spec = {{"lower", layer_dirs(s)}, {"mkdir", mkdir}};
            return run_helper(run.path(), spec);
        });
    }

    // ---- RUN -----------------------------------------------------------------------------------
    std::vector<std::string> run_argv(const ImageState& s, const RunInstr& r) const {
        if (r.command.exec_form) return r.command.args;
        std::string text;
        for (const auto& a : r.command.args) text += (text.empty() ? "" : " ") + a;
        std::vector<std::string> argv = shell_of(s);
        if (!r.heredocs.empty()) {
            std::string trimmed = text;
            trimmed.erase(0, trimmed.find_first_not_of(" \t"));
            trimmed.erase(trimmed.find_last_not_of(" \t") + 1);
            // A lone heredoc is the script itself; otherwise the shell reads the heredocs.
            if (r.heredocs.size() == 1 && parse_heredoc_word(trimmed)) {
                argv.push_back(r.heredocs[0].content);
                return argv;
            }
            for (const auto& h : r.heredocs) text += "\n" + h.content + h.name;
        }
        argv.push_back(text);
        return argv;
    }

    // ---- RUN --mount (build_mounts.hpp) -------------------------------------------------------
    const ImageState& mount_from_state(const std::string& from) {
        if (auto dep = stage_by_name(from, current_stage_index_)) return stage_states_.at(*dep);
        auto it = mount_images_.find(from);
        if (it == mount_images_.end()) it = mount_images_.emplace(from, state_from_image(from)).first;
        return it->second;
    }

    MountInputs mount_inputs() {
        MountInputs in;
        in.store = &store_;
        in.mapping = mapping_;
        in.context = req_.context;
        in.matcher = matcher_ ? &*matcher_ : nullptr;
        in.secrets = &req_.secrets;
        in.ssh = &req_.ssh;
        in.from_key = [this](const std::string& from) { return mount_from_state(from).key; };
        in.from_layers = [this](const std::string& from) { return layer_dirs(mount_from_state(from)); };
        return in;
    }

    void on(ImageState& s, const Instruction& ins, const RunInstr& r) {
        std::string workdir = cfg_string(s, "WorkingDir");
        std::vector<BuildMount> mounts = resolve_mounts(r.mounts, [&](const std::string& w) { return expand(s, w); },
                                                        workdir.empty() ? "/" : workdir);
        std::vector<std::string> argv = run_argv(s, r);
        std::vector<std::string> env = env_list(s);
        std::set<std::string> env_keys;
        for (const auto& e : env) env_keys.insert(e.substr(0, e.find('=')));
        std::vector<std::string> arg_parts;
        for (const auto& [k, v] : args_) {
            arg_parts.push_back(k + "=" + v);
            if (!env_keys.count(k)) env.push_back(k + "=" + v);
        }
        for (const auto& p : predefined_proxy_args())
            if (auto it = req_.build_args.find(p); it != req_.build_args.end() && !args_.count(p))
                env.push_back(p + "=" + it->second);
        std::string text = "RUN " + (r.command.exec_form ? json_words(argv) : argv.back());
        if (!r.command.exec_form) {
            text = "RUN";
            for (std::size_t i = 0; i < argv.size(); ++i) text += " " + argv[i];
        }
        std::vector<std::string> key_parts = arg_parts;
        key_parts.push_back("network=" + r.network);
        MountInputs mount_in = mount_inputs();
        for (auto& part : mount_key_parts(mounts, mount_in)) key_parts.push_back(std::move(part));
        (void)ins;
        layer_step(s, text, key_parts, [&]() { return run_container_step(s, argv, env, r.network, mounts, mount_in); });
    }

    // The default profile compiled once per build, through the store's cache (libseccomp takes
    // 15-35 ms per compilation; a cache hit is one small read): every RUN has the same caps.
    const std::vector<sock_filter>& seccomp_program(std::uint64_t caps) {
        if (!seccomp_ || seccomp_caps_ != caps) {
            const fs::path dir = store_.cache_dir() / "seccomp";
            const std::string profile = runtime::default_seccomp_profile_text();
            const runtime::SeccompContext ctx = runtime::host_seccomp_context(caps);
            const fs::path entry = runtime::seccomp_cache_entry(dir, profile, ctx);
            std::error_code ec;
            const bool had_dir = fs::exists(dir, ec), had_entry = fs::exists(entry, ec);
            seccomp_ = runtime::compile_seccomp_cached(dir, profile, ctx);
            seccomp_caps_ = caps;
            // A failed build leaves the store as it was: a new entry (and dir) goes with it.
            if (!had_entry && fs::exists(entry, ec)) rollback_.added_path(entry);
            if (!had_dir && fs::exists(dir, ec)) rollback_.added_path(dir);
        }
        return *seccomp_;
    }

    std::optional<StepLayer> run_container_step(const ImageState& s, const std::vector<std::string>& argv,
                                                const std::vector<std::string>& env, const std::string& network,
                                                const std::vector<BuildMount>& mounts, const MountInputs& mount_in) {
        runtime::ContainerSpec spec;
        spec.mapping = mapping_;
        spec.layers_dir = store_.layers_dir();
        spec.layers = layer_dirs(s);
        spec.network = network == "none" ? runtime::Network::None : runtime::Network::Host;
        spec.hostname = "buildkitsandbox";
        runtime::UserDb db{runtime::read_layered_file(spec.layers_dir, spec.layers, "/etc/passwd"),
                           runtime::read_layered_file(spec.layers_dir, spec.layers, "/etc/group")};
        runtime::ProcessSpec& p = spec.process;
        p.argv = argv;
        p.env = env;
        std::string path_value = runtime::kDefaultPath;
        bool has_path = false;
        for (const auto& e : env)
            if (e.rfind("PATH=", 0) == 0) {
                path_value = e.substr(5);
                has_path = true;
            }
        if (!has_path) p.env.push_back(std::string("PATH=") + runtime::kDefaultPath);
        for (std::size_t start = 0; start <= path_value.size();) {
            auto colon = path_value.find(':', start);
            if (colon == std::string::npos) colon = path_value.size();
            if (colon > start) p.path_dirs.push_back(path_value.substr(start, colon - start));
            start = colon + 1;
        }
        p.cwd = cfg_string(s, "WorkingDir");
        if (p.cwd.empty()) p.cwd = "/";
        const std::string user = cfg_string(s, "User");
        const runtime::ResolvedUser u = runtime::resolve_user(user.empty() ? "0" : user, db);
        p.uid = u.uid;
        p.gid = u.gid;
        p.groups = u.groups;
        // HOME as runc's setupUser sets it when the environment has none: the user's home in
        // the image's /etc/passwd, "/" when the user has no entry there.
        if (std::none_of(p.env.begin(), p.env.end(), [](const std::string& e) { return e.rfind("HOME=", 0) == 0; }))
            p.env.push_back("HOME=" + u.home);
        // Single mode: root emulation (set*id, device mknod faked; chown owners recorded; apt as
        // root: runtime/fakeroot.hpp). Only container root is mapped there, so a non-root USER
        // runs as root that the get*id family reports as USER, and what the step makes is
        // USER's in its layer (commit: "owner").
        std::optional<oci::LayerOwner> made_by;
        if (mapping_.mode == runtime::UsernsMode::Single) {
            spec.emulate_root_ids = true;
            if (p.uid != 0 || p.gid != 0) {
                spec.emulated_identity = runtime::EmulatedIdentity{p.uid, p.gid, {p.groups.begin(), p.groups.end()}};
                made_by = oci::LayerOwner{p.uid, p.gid};
                p.uid = p.gid = 0;
            }
            p.groups.clear();  // setgroups is denied
        }
        spec.capabilities = runtime::default_capabilities();
        spec.seccomp = seccomp_program(spec.capabilities);
        runtime::MountPlanInput mi;
        mi.host_network = spec.network == runtime::Network::Host;
        mi.gid5_mapped = mapping_.gid_mapped_inside(5);
        // Held (locks, copies, secret files) until the RUN is over.
        std::optional<MountSession> session;
        // The mountpoints the runtime may create in the upper dir, removed before the commit
        // (BuildKit's MountStubsCleaner: resolv.conf, hosts and every mount target; here also
        // /proc, /dev and /sys, which an image without them gets from the runtime).
        std::vector<std::string> stubs{"/proc", "/dev", "/sys"};
        if (mi.host_network) stubs.insert(stubs.end(), {"/etc/resolv.conf", "/etc/hosts"});
        if (!mounts.empty()) {
            session.emplace(mounts, mount_in, p.env);
            mi.extra = session->steps();
            p.env.insert(p.env.end(), session->env().begin(), session->env().end());
            stubs.insert(stubs.end(), session->stub_targets().begin(), session->stub_targets().end());
        }
        spec.mounts = runtime::plan_mounts(mi);

        // The helper commits the layer: it execs while the container runs (and before a quiet
        // build redirects stderr, which the helper keeps).
        helper_.start();
        WorkDir run(store_, helper_);
        spec.run_dir = run.path();
        QuietOutput quiet(req_.quiet);
        runtime::RunResult result = runtime::run_container(spec);
        const std::string step = "[" + std::to_string(step_) + "/" + std::to_string(total_steps_) + "] " +
                                 (argv.size() > 2 ? argv.back() : json_words(argv));
        // The user stopped the build (the signal went to the command too): not a failed RUN.
        // main() exits 128+N; the rollback and the work dir's removal run on the way out.
        if (result.signal != 0)
            throw Interrupted(step + ": interrupted by " + sigabbrev_or_number(result.signal),
                              "the build stopped; nothing was tagged and the store is as it was", result.signal);
        if (result.status != 0) {
            quiet.show();
            std::string why = result.error.empty() ? "" : ": " + result.error;
            throw Error(step + ": the command returned exit status " + std::to_string(result.status) + why,
                        "the RUN step failed; its output is above");
        }
        quiet.restore();
        session.reset();
        json commit{{"lower", spec.layers}, {"stubs", stubs}};
        if (made_by) commit["owner"] = {made_by->uid, made_by->gid};
        return run_helper(run.path(), commit);
    }

    // ---- COPY / ADD ----------------------------------------------------------------------------
    std::optional<CopyOwner> resolve_chown(const ImageState& s, const std::string& spec) {
        if (spec.empty()) return std::nullopt;
        auto layers = layer_dirs(s);
        runtime::UserDb db{runtime::read_layered_file(store_.layers_dir(), layers, "/etc/passwd"),
                           runtime::read_layered_file(store_.layers_dir(), layers, "/etc/group")};
        auto colon = spec.find(':');
        std::string user = spec.substr(0, colon);
        auto u = runtime::resolve_user(user, db);
        // BuildKit: a numeric uid alone gives the same gid, a user name its primary group.
        const bool numeric = !user.empty() && user.find_first_not_of("0123456789") == std::string::npos;
        CopyOwner o{u.uid, numeric ? u.uid : u.gid};
        if (colon != std::string::npos) o.gid = runtime::resolve_user("0:" + spec.substr(colon + 1), db).gid;
        return o;
    }

    std::optional<CopyOwner> workdir_owner(const ImageState& s, const std::string& spec) {
        if (spec.empty()) return std::nullopt;
        auto layers = layer_dirs(s);
        runtime::UserDb db{runtime::read_layered_file(store_.layers_dir(), layers, "/etc/passwd"),
                           runtime::read_layered_file(store_.layers_dir(), layers, "/etc/group")};
        auto u = runtime::resolve_file_owner(spec, db);
        return CopyOwner{u.uid, u.gid};
    }

    void copy_step(ImageState& s, const std::string& keyword, const std::vector<std::string>& raw_sources,
                   const std::string& raw_dest, const std::vector<Heredoc>& heredocs, const std::string& raw_from,
                   const std::string& raw_chown, const std::string& raw_chmod, bool add,
                   const std::string& raw_checksum = "") {
        CopyRequest req;
        req.instruction = keyword;
        req.extract_archives = add;
        for (const auto& h : heredocs)
            req.heredocs[h.name] = h.expand ? process(h.content, env_from_map(expansion_env(s)),
                                                      LexOptions{.escape = df_.directives.escape, .raw_quotes = true,
                                                                 .raw_escapes = true}).word
                                            : h.content;
        for (const auto& src : raw_sources) req.sources.push_back(src.rfind("<<", 0) == 0 ? src : expand(s, src));
        // ADD's http(s) sources are downloaded here and copied from there (build_fetch.hpp).
        std::optional<UrlSources> remote =
            add ? url_sources(req.sources, expand(s, raw_checksum), store_.tmp_dir()) : std::nullopt;
        std::string dest = expand(s, raw_dest);
        bool slash = !dest.empty() && dest.back() == '/';
        req.dest = fs::path(absolute_in_workdir(s, dest)).lexically_normal().string();
        if (slash && req.dest.back() != '/') req.dest += '/';
        req.chown = resolve_chown(s, expand(s, raw_chown));
        if (!raw_chmod.empty()) req.chmod = parse_chmod(expand(s, raw_chmod), keyword);
        std::string from = raw_from.empty() ? "" : expand(s, raw_from);

        json copy = {{"sources", req.sources}, {"dest", req.dest}, {"add", add}, {"instruction", keyword},
                     {"heredocs", req.heredocs}, {"chown", nullptr}, {"chmod", nullptr}};
        if (req.chown) copy["chown"] = {req.chown->uid, req.chown->gid};
        if (req.chmod) copy["chmod"] = *req.chmod;
        std::string text = keyword;
        if (!from.empty()) text += " --from=" + from;
        if (!raw_chown.empty()) text += " --chown=" + expand(s, raw_chown);
        if (!raw_chmod.empty()) text += " --chmod=" + expand(s, raw_chmod);
        for (const auto& src : req.sources) text += " " + src;
        text += " " + req.dest;

        std::vector<std::string> key_parts;
        const ImageState* from_state = nullptr;
        ImageState image_state;
        if (remote) {
            for (auto& part : remote->key_parts()) key_parts.push_back(std::move(part));  // downloads unless --checksum
        } else if (from.empty()) {
            UniqueFd ctx(::open(req_.context.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            if (!ctx) throw_errno("open build context", req_.context.string());
            if (!digest_memo_)
                digest_memo_.emplace(store_.cache_dir(), fs::weakly_canonical(fs::absolute(req_.context)).string());
            key_parts.push_back(source_digest(ctx.get(), req, matcher_ ? &*matcher_ : nullptr, &*digest_memo_).str());
            copy["src_dir"] = fs::absolute(req_.context).string();
            if (matcher_) copy["ignore"] = ignore_patterns_;
        } else {
            req.preserve_owner = true;
            copy["preserve_owner"] = true;
            if (auto dep = stage_by_name(from, current_stage_index_)) {
                from_state = &stage_states_.at(*dep);
            } else {
                image_state = state_from_image(from);
                from_state = &image_state;
            }
            key_parts.push_back(from_state->key.str());
        }
        for (const auto& [k, v] : req.heredocs) key_parts.push_back("<<" + k + "\n" + v);
        layer_step(s, text, key_parts, [&]() -> std::optional<StepLayer> {
            if (from_state) copy["src_layers"] = layer_dirs(*from_state);
            if (remote) {  // remote archives are not extracted
                copy["sources"] = remote->copy_sources();
                copy["src_dir"] = remote->dir().string();
                copy["add"] = false;
            }
            WorkDir run(store_, helper_);
            json spec = {{"lower", layer_dirs(s)}, {"copy", copy}};
            return run_helper(run.path(), spec);
        });
    }

    void on(ImageState& s, const Instruction&, const CopyInstr& c) {
        copy_step(s, "COPY", c.sources, c.dest, c.heredocs, c.from, c.chown, c.chmod, false);
    }

    void on(ImageState& s, const Instruction&, const AddInstr& a) {
        copy_step(s, "ADD", a.sources, a.dest, a.heredocs, "", a.chown, a.chmod, true, a.checksum);
    }

    // ---- the image -----------------------------------------------------------------------------
    BuildResult write_image(ImageState& s) {
        json ids = json::array();
        for (const auto& d : s.diff_ids) ids.push_back(d.str());
        s.config["rootfs"] = {{"type", "layers"}, {"diff_ids", ids}};
        s.config.erase("container_config");
        s.config.erase("container");
        s.config.erase("docker_version");
        oci::ImageConfig config(s.config);
        std::string config_bytes = config.to_json();

        auto lock = store_.lock_exclusive();
        oci::Manifest m;
        m.kind = oci::ManifestKind::OciManifest;
        m.media_type = std::string(oci::media_type::kOciManifest);
        m.config.media_type = std::string(oci::media_type::kOciConfig);
        m.config.digest = store_.put_blob(config_bytes);
        m.config.size = static_cast<std::int64_t>(config_bytes.size());
        for (auto d : s.layers) {
            d.media_type = layer_media_type_oci(d.media_type);
            d.annotations.clear();
            d.urls.clear();
            d.platform.reset();
            m.layers.push_back(d);
        }
        std::string manifest_bytes = oci::manifest_to_json(m);
        oci::Descriptor md;
        md.media_type = std::string(oci::media_type::kOciManifest);
        md.digest = store_.put_blob(manifest_bytes);
        md.size = static_cast<std::int64_t>(manifest_bytes.size());
        for (const auto& tag : req_.tags) {
            auto previous = store_.find_image(tag);
            rollback_.tagged(tag, previous ? std::optional(previous->descriptor) : std::nullopt, md);
            store_.tag_image(tag, md);
        }
        return {m.config.digest, md};
    }

    // First: held for the build's whole life, released only after the rollback has run.
    HeldSignals signals_;
    // What the build uses and makes (oci/lease.hpp); ends after the rollback.
    std::shared_ptr<oci::Lease> lease_;
    oci::Store store_;  // the caller's, with the lease: its writes are recorded there
    const BuildRequest& req_;
    StepCache cache_;
    bool mapping_known_before_, meta_existed_;
    runtime::IdMapping mapping_;
    Rollback rollback_;
    StepHelper helper_;  // after rollback_: gone (its removals done) before the rollback runs
    Dockerfile df_;
    std::map<std::string, std::string> global_scope_;
    std::map<std::string, std::string> args_;  // the stage's ARGs in scope
    std::vector<std::string> ignore_patterns_;
    std::optional<IgnoreMatcher> matcher_;
    std::map<int, ImageState> stage_states_;
    std::map<std::string, ImageState> mount_images_;  // images named by RUN --mount from=
    std::optional<std::vector<sock_filter>> seccomp_;  // seccomp_program()
    std::optional<ContextDigestMemo> digest_memo_;     // the context files' digests (build_copy.hpp)
    std::uint64_t seccomp_caps_ = 0;
    int current_stage_index_ = 0;
    int step_ = 0;
    int total_steps_ = 0;
};

}  // namespace

BuildResult build_image(oci::Store& store, const BuildRequest& request) {
    Builder builder(store, request);
    return builder.run();
}

}  // namespace aishell::composer
