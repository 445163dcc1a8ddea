// The build engine (see build_engine.hpp): the Builder walks the stages the target needs and
// dispatches each instruction to its step. The pieces live beside it: stage planning
// (build_stages.*), config changes and history (build_config.*), cache keys (build_keys.*),
// the RUN step (build_run_step.*), the COPY/ADD plan (build_copy_step.*), the image's commit
// (build_commit.*) and the rollback of a failed build (build_rollback.*).
#include "composer/build_engine.hpp"

#include <fcntl.h>

#include <chrono>
#include <iostream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/held_signals.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_commit.hpp"
#include "composer/build_config.hpp"
#include "composer/build_copy.hpp"
#include "composer/build_copy_step.hpp"
#include "composer/build_keys.hpp"
#include "composer/build_mounts.hpp"
#include "composer/build_rollback.hpp"
#include "composer/build_run_step.hpp"
#include "composer/build_stages.hpp"
#include "composer/build_step.hpp"
#include "composer/dockerignore.hpp"
#include "composer/instructions.hpp"
#include "composer/step_cache.hpp"
#include "oci/image.hpp"
#include "oci/lease.hpp"
#include "runtime/launch.hpp"
#include "runtime/userns_exec.hpp"

namespace aishell::composer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;  // the config document (build_config.hpp)

runtime::UserDb user_db(const fs::path& layers_dir, const std::vector<std::string>& layers) {
    return {runtime::read_layered_file(layers_dir, layers, "/etc/passwd"),
            runtime::read_layered_file(layers_dir, layers, "/etc/group")};
}

std::string elapsed_text(std::chrono::steady_clock::time_point started) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    return std::to_string(ms.count() / 1000) + "." + std::to_string((ms.count() % 1000) / 10 / 10) +
           std::to_string((ms.count() % 100) / 10) + "s";
}

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
          helper_(store_, mapping_),
          seccomp_(store_.cache_dir() / "seccomp", [this](const fs::path& p) { rollback_.added_path(p); }) {}

    BuildResult run() {
        df_ = load_dockerfile(req_.dockerfile.string());
        global_scope_ = global_arg_scope(df_, req_.build_args, req_.platform);
        load_ignore();
        const Stage& target = target_stage(df_, req_.target);
        const std::set<int> needed = needed_stages(df_, target.index, global_scope_);
        for (int i : needed) total_steps_ += 1 + static_cast<int>(df_.stages[i].instructions.size());
        for (int i : needed) {
            current_stage_index_ = i;
            stage_states_[i] = build_stage(df_.stages[i]);
        }
        stop_if_signalled("writing the image");
        ImageState& final_state = stage_states_.at(target.index);
        apply_request_labels(final_state, req_.labels);
        // The last signal check is made under the store lock, before the tags: once tagged
        // (and the caller's on_tagged has recorded the image) the build is done. Checking after
        // the tags would untag an image the caller's record already names; a signal that comes
        // during the tagging is treated as one that comes after the build (HeldSignals).
        BuildResult result = commit_image(store_, final_state, req_.tags, rollback_,
                                          {[&] { stop_if_signalled("writing the image"); }, req_.on_tagged});
        rollback_.commit();
        if (digest_memo_) digest_memo_->save();  // only a build that succeeded adds to the store
        return result;
    }

private:
    // ---- stages ------------------------------------------------------------------------------
    void load_ignore() {
        if (auto file = find_dockerignore(req_.context, req_.dockerfile))
            ignore_patterns_ = read_dockerignore(read_file(*file, 4 * 1024 * 1024), file->string());
        ignore_patterns_.insert(ignore_patterns_.end(), req_.context_excludes.begin(), req_.context_excludes.end());
        if (!ignore_patterns_.empty()) matcher_.emplace(ignore_patterns_);
    }

    // The state a FROM or --from names: an earlier stage's, else an image's (pulled if missing).
    ImageState state_of(const std::string& name) {
        if (auto dep = stage_by_name(df_, name, current_stage_index_)) return stage_states_.at(*dep);
        return image_state(store_, *lease_, name, req_.pull);
    }

    ImageState build_stage(const Stage& stage) {
        std::string base = expand_from(df_, stage, global_scope_);
        step_line("FROM " + base + (stage.name.empty() ? "" : " AS " + stage.name));
        ImageState s;
        if (auto dep = stage_by_name(df_, base, stage.index)) {
            s = stage_states_.at(*dep);
        } else if (is_scratch(base)) {
            s = scratch_state();
            s.key = scratch_key();
        } else {
            s = image_state(store_, *lease_, base, req_.pull);
        }
        s.cmd_set = false;
        args_.clear();
        ensure_default_path(s);
        run_onbuild_triggers(s);
        for (const auto& ins : stage.instructions) dispatch(s, ins);
        return s;
    }

    void run_onbuild_triggers(ImageState& s) {
        json& c = config_object(s);
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
    std::string expand(const ImageState& s, const std::string& word) const {
        return process_word(word, env_from_map(expansion_env(s, args_)), df_.directives.escape);
    }

    std::string expand_heredoc(const ImageState& s, const std::string& body) const {
        return process(body, env_from_map(expansion_env(s, args_)),
                       LexOptions{.escape = df_.directives.escape, .raw_quotes = true, .raw_escapes = true})
            .word;
    }

    // ---- steps -------------------------------------------------------------------------------
    void step_line(const std::string& text, bool cached = false) {
        ++step_;
        if (req_.quiet) return;
        std::string line = text;
        if (line.size() > 200) line = line.substr(0, 197) + "...";
        std::cerr << (cached ? "CACHED " : "") << "[" << step_ << "/" << total_steps_ << "] " << line << std::endl;
    }

    std::string step_label(int step) const { return "[" + std::to_string(step) + "/" + std::to_string(total_steps_) + "] "; }

    std::string now_created() const {
        if (req_.source_date_epoch) return rfc3339(*req_.source_date_epoch);
        return rfc3339(std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count());
    }

    // A metadata step: the config change is applied by the caller; the cache keeps the date.
    void metadata_step(ImageState& s, const std::string& text) {
        oci::Digest key = metadata_key(s.key, text, req_.source_date_epoch);
        std::optional<CacheEntry> hit = req_.no_cache ? std::nullopt : cache_.get(key);
        step_line(text, hit.has_value());
        std::string created = hit ? hit->created : now_created();
        if (!hit) rollback_.cache_entry(cache_.put(key, CacheEntry{created, std::nullopt}));
        add_history(s, created, text, true);
        s.key = key;
    }

    // The entry for key unless --no-cache; lease, then look: the layer blob a hit names may
    // have been taken back by the rollback of the build that wrote the entry; then it is a miss.
    std::optional<CacheEntry> cache_hit(const oci::Digest& key) {
        std::optional<CacheEntry> hit = req_.no_cache ? std::nullopt : cache_.get(key);
        if (hit && hit->layer) {
            lease_->add({oci::LeaseEntry::blob(hit->layer->descriptor.digest)});
            if (!store_.has_blob(hit->layer->descriptor.digest)) hit.reset();
        }
        return hit;
    }

    // A layer step: a cache hit reuses the layer, a miss runs produce() which returns the layer.
    void layer_step(ImageState& s, const std::string& text, const std::vector<std::string>& key_parts,
                    const std::function<std::optional<StepLayer>()>& produce) {
        oci::Digest key = layer_key(s.key, text, mapping_.to_string(), req_.source_date_epoch, key_parts);
        std::optional<CacheEntry> hit = cache_hit(key);
        step_line(text, hit.has_value());
        CacheEntry entry;
        if (hit) {
            entry = *hit;
        } else {
            auto started = std::chrono::steady_clock::now();
            entry.created = now_created();
            entry.layer = produce();
            rollback_.cache_entry(cache_.put(key, entry));
            if (!req_.quiet) std::cerr << "  done in " << elapsed_text(started) << std::endl;
        }
        if (entry.layer) {
            s.layers.push_back(entry.layer->descriptor);
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
        image.config = oci::ImageConfig(final_config(s));
        return runtime::ensure_image_layers(store_, image, mapping_);
    }

    // The in-namespace half of a step, in the build's step helper (build_step.hpp).
    // spec: the step's own part (lower and copy, mkdir or stubs); the rest is the build's.
    std::optional<StepLayer> run_helper(const fs::path& run_dir, StepSpec spec) {
        spec.store = store_.root().string();
        spec.lease = lease_->path().string();  // the helper records the step's blob and tree there
        spec.run_dir = run_dir.string();
        spec.compression = req_.compression;
        spec.clamp = req_.source_date_epoch;
        return helper_.run(spec);
    }

    // ---- instructions ------------------------------------------------------------------------
    // Stops the build at a checkpoint when SIGINT, SIGTERM or SIGHUP arrived (held pending
    // meanwhile: common/held_signals.hpp); the rollback then undoes what it wrote.
    void stop_if_signalled(const std::string& where) {
        if (int sig = signals_.take())
            throw Interrupted(where + ": interrupted by " + signal_name(sig),
                              "the build stopped; nothing was tagged and the store is as it was", sig);
    }

    void dispatch(ImageState& s, const Instruction& ins) {
        const int announced_before = step_;
        try {
            stop_if_signalled(step_label(step_ + 1) + ins.node.original.substr(0, 80));
            std::visit([&](const auto& c) { on(s, ins, c); }, ins.command);
        } catch (Error& e) {
            // An instruction that fails before its step line (COPY sources, expansion) is still
            // its own step, not the one before it. FROM's line is printed by the stage setup.
            const bool own_line_printed = step_ != announced_before || std::holds_alternative<FromInstr>(ins.command);
            const std::string label =
                step_label(own_line_printed ? step_ : announced_before + 1) + ins.node.original.substr(0, 80);
            // A step that failed because the same signal stopped one of its helpers (they share
            // the terminal's process group) was interrupted, not broken.
            if (!dynamic_cast<const Interrupted*>(&e)) stop_if_signalled(label);
            if (e.message().rfind("[", 0) != 0)
                e.add_context(label + " (" + df_.filename + ":" + std::to_string(ins.line()) + ")");
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
        ++step_;  // BuildKit records no history for ARG
        if (!req_.quiet) std::cerr << step_label(step_) << ins.node.original << std::endl;
    }

    void on(ImageState& s, const Instruction&, const EnvInstr& e) {
        // Every pair expands with the environment from before the instruction (Docker and
        // BuildKit: `ENV A=1 B=${A}2` gives B=2 unless A was set earlier), then all are set.
        std::vector<std::pair<std::string, std::string>> pairs;
        for (const auto& kv : e.env) pairs.emplace_back(expand(s, kv.key), expand(s, kv.value));
        metadata_step(s, apply_env(s, pairs));
    }

    void on(ImageState& s, const Instruction&, const LabelInstr& l) {
        std::vector<std::pair<std::string, std::string>> labels;
        for (const auto& kv : l.labels) labels.emplace_back(expand(s, kv.key), expand(s, kv.value));
        metadata_step(s, apply_labels(s, labels));
    }

    void on(ImageState& s, const Instruction&, const MaintainerInstr& m) {
        s.config["author"] = m.name;
        metadata_step(s, "MAINTAINER " + m.name);
    }

    void on(ImageState& s, const Instruction&, const CmdInstr& c) { metadata_step(s, apply_cmd(s, command_args(s, c.command))); }

    void on(ImageState& s, const Instruction&, const EntrypointInstr& e) {
        metadata_step(s, apply_entrypoint(s, command_args(s, e.command)));
    }

    void on(ImageState& s, const Instruction&, const ShellInstr& sh) {
        config_object(s)["Shell"] = sh.shell;
        metadata_step(s, "SHELL " + json_words(sh.shell));
    }

    void on(ImageState& s, const Instruction&, const ExposeInstr& e) {
        std::vector<std::string> ports;
        for (const auto& raw : e.ports)
            for (const auto& word : process_words(raw, env_from_map(expansion_env(s, args_)), df_.directives.escape))
                for (const auto& port : exposed_ports(word)) ports.push_back(port);  // checked after expansion
        add_config_keys(s, "ExposedPorts", ports);
        std::string text = "EXPOSE";
        for (const auto& p : ports) text += " " + p;
        metadata_step(s, text);
    }

    void on(ImageState& s, const Instruction&, const VolumeInstr& v) {
        std::vector<std::string> paths;
        std::string text = "VOLUME";
        for (const auto& raw : v.volumes) {
            paths.push_back(expand(s, raw));
            if (paths.back().empty()) throw Error("VOLUME specified can not be an empty string");
            text += " " + paths.back();
        }
        add_config_keys(s, "Volumes", paths);
        metadata_step(s, text);
    }

    void on(ImageState& s, const Instruction&, const UserInstr& u) {
        std::string user = expand(s, u.user);
        config_object(s)["User"] = user;
        metadata_step(s, "USER " + user);
    }

    void on(ImageState& s, const Instruction&, const StopsignalInstr& sig) {
        std::string value = expand(s, sig.signal);
        config_object(s)["StopSignal"] = value;
        metadata_step(s, "STOPSIGNAL " + value);
    }

    void on(ImageState& s, const Instruction&, const OnbuildInstr& o) { metadata_step(s, apply_onbuild(s, o.expression)); }

    void on(ImageState& s, const Instruction&, const HealthcheckInstr& h) { metadata_step(s, apply_healthcheck(s, h)); }

    void on(ImageState& s, const Instruction&, const WorkdirInstr& w) {
        const std::string path = normalize_workdir(s, expand(s, w.path));
        config_object(s)["WorkingDir"] = path;
        std::string text = "WORKDIR " + path;
        if (path == "/") {
            metadata_step(s, text);
            return;
        }
        // BuildKit creates the directory (a layer only when it was missing) for the image's USER
        // (llb.Mkdir WithUser: its uid and primary group; a bare uid N is N:N), so a later
        // `RUN touch x` as that user works there. A user the image does not know makes it
        // root's, as in BuildKit and Docker's classic builder (a RUN as that user fails).
        MkdirStepSpec mkdir{fs::path(path).lexically_normal().string(), std::nullopt};
        std::optional<std::pair<std::uint32_t, std::uint32_t>> owner;
        if (const std::string user = config_string(s, "User"); !user.empty()) {
            const runtime::ResolvedUser u = runtime::resolve_file_owner(user, user_db(store_.layers_dir(), layer_dirs(s)));
            owner.emplace(u.uid, u.gid);
            mkdir.owner = CopyOwner{u.uid, u.gid};
        }
        layer_step(s, text, workdir_key_parts(owner), [&]() -> std::optional<StepLayer> {
            WorkDir run(store_, helper_);
            StepSpec spec;
            spec.lower = layer_dirs(s);
            spec.mkdir = mkdir;
            return run_helper(run.path(), std::move(spec));
        });
    }

    // ---- RUN (build_run_step.hpp) --------------------------------------------------------------
    const ImageState& mount_from_state(const std::string& from) {
        if (auto dep = stage_by_name(df_, from, current_stage_index_)) return stage_states_.at(*dep);
        auto it = mount_images_.find(from);
        if (it == mount_images_.end()) it = mount_images_.emplace(from, state_of(from)).first;
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

    void on(ImageState& s, const Instruction&, const RunInstr& r) {
        const std::string workdir = config_string(s, "WorkingDir");
        const std::vector<BuildMount> mounts = resolve_mounts(
            r.mounts, [&](const std::string& w) { return expand(s, w); }, workdir.empty() ? "/" : workdir);
        const MountInputs mount_in = mount_inputs();
        RunStepInput in;
        in.store = &store_;
        in.mapping = mapping_;
        in.argv = run_argv(s, r);
        in.env = run_environment(s, args_, req_.build_args);
        in.cwd = workdir;
        in.user = config_string(s, "User");
        in.network = r.network;
        in.mounts = &mounts;
        in.mount_inputs = &mount_in;
        in.seccomp = &seccomp_;
        in.quiet = req_.quiet;
        const std::string text = run_history_text(in.argv, r.command.exec_form);
        layer_step(s, text, run_key_parts(args_, r.network, mount_key_parts(mounts, mount_in)),
                   [&]() { return run_step(s, in); });
    }

    std::optional<StepLayer> run_step(const ImageState& s, RunStepInput in) {
        in.layers = layer_dirs(s);
        // The helper commits the layer: it execs while the container runs (and before a quiet
        // build redirects stderr, which the helper keeps).
        helper_.start();
        WorkDir run(store_, helper_);
        in.run_dir = run.path();
        in.step_label = step_label(step_);
        RunCommit commit = run_container_step(in);
        StepSpec spec;
        spec.lower = std::move(commit.lower);
        spec.stubs = std::move(commit.stubs);
        spec.owner = commit.owner;
        return run_helper(run.path(), std::move(spec));
    }

    // ---- COPY / ADD (build_copy_step.hpp) ------------------------------------------------------
    // The context files' part of the key: source_digest, remembered across builds.
    std::string context_key_part(const CopyRequest& req) {
        UniqueFd ctx(::open(req_.context.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!ctx) throw_errno("open build context", req_.context.string());
        if (!digest_memo_)
            digest_memo_.emplace(store_.cache_dir(), fs::weakly_canonical(fs::absolute(req_.context)).string());
        return source_digest(ctx.get(), req, matcher_ ? &*matcher_ : nullptr, &*digest_memo_).str();
    }

    void copy_step(ImageState& s, const CopyStepArgs& args) {
        const CopyExpanders expanders{[&](const std::string& w) { return expand(s, w); },
                                      [&](const std::string& body) { return expand_heredoc(s, body); }};
        CopyPlan plan = plan_copy(args, s, expanders, [&] { return user_db(store_.layers_dir(), layer_dirs(s)); },
                                  store_.tmp_dir());
        CopyStepSpec copy{plan.request, "", std::nullopt, std::nullopt};
        std::vector<std::string> key_parts;
        std::optional<ImageState> from_state;
        if (plan.remote) {
            for (auto& part : plan.remote->key_parts()) key_parts.push_back(std::move(part));  // downloads unless --checksum
        } else if (plan.from.empty()) {
            key_parts.push_back(context_key_part(plan.request));
            copy.src_dir = fs::absolute(req_.context).string();
            if (matcher_) copy.ignore = ignore_patterns_;
        } else {
            from_state = state_of(plan.from);
            key_parts.push_back(from_state->key.str());
        }
        for (const auto& [k, v] : plan.request.heredocs) key_parts.push_back(heredoc_key_part(k, v));
        layer_step(s, plan.text, key_parts, [&]() -> std::optional<StepLayer> {
            if (from_state) copy.src_layers = layer_dirs(*from_state);
            if (plan.remote) {  // remote archives are not extracted
                copy.request.sources = plan.remote->copy_sources();
                copy.src_dir = plan.remote->dir().string();
                copy.request.extract_archives = false;
            }
            WorkDir run(store_, helper_);
            StepSpec spec;
            spec.lower = layer_dirs(s);
            spec.copy = copy;
            return run_helper(run.path(), std::move(spec));
        });
    }

    void on(ImageState& s, const Instruction&, const CopyInstr& c) { copy_step(s, copy_step_args(c)); }

    void on(ImageState& s, const Instruction&, const AddInstr& a) { copy_step(s, copy_step_args(a)); }

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
    SeccompCache seccomp_;
    Dockerfile df_;
    std::map<std::string, std::string> global_scope_;
    std::map<std::string, std::string> args_;  // the stage's ARGs in scope
    std::vector<std::string> ignore_patterns_;
    std::optional<IgnoreMatcher> matcher_;
    std::map<int, ImageState> stage_states_;
    std::map<std::string, ImageState> mount_images_;  // images named by RUN --mount from=
    std::optional<ContextDigestMemo> digest_memo_;     // the context files' digests (build_copy.hpp)
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
