// The build engine's pure pieces: config changes per instruction (build_config.hpp), history
// entries, cache keys (build_keys.hpp), stage planning (build_stages.hpp), the RUN step's argv,
// environment and process (build_run_step.hpp), COPY --chown (build_copy_step.hpp) and the
// manifest of a commit (build_commit.hpp).
#include <catch2/catch.hpp>

#include "composer/build_commit.hpp"
#include "composer/build_config.hpp"
#include "composer/build_copy_step.hpp"
#include "composer/build_keys.hpp"
#include "composer/build_run_step.hpp"
#include "composer/build_stages.hpp"
#include "oci/media_types.hpp"
#include "runtime/process.hpp"

using namespace aishell;
using namespace aishell::composer;
using nlohmann::json;

namespace {

ImageState with_env(std::vector<std::string> env) {
    ImageState s = scratch_state();
    config_object(s)["Env"] = env;
    return s;
}

const runtime::UserDb kUsers{"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
                             "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"};

}  // namespace

TEST_CASE("ENV sets each pair, replacing an existing key in place", "[build_config]") {
    ImageState s = with_env({"PATH=/bin", "A=old"});
    CHECK(apply_env(s, {{"A", "new"}, {"B", "2"}}) == "ENV A=new B=2");
    CHECK(env_list(s) == std::vector<std::string>{"PATH=/bin", "A=new", "B=2"});
}

TEST_CASE("ENV wins over an ARG of the same name in expansion", "[build_config]") {
    ImageState s = with_env({"A=env"});
    auto env = expansion_env(s, {{"A", "arg"}, {"B", "arg"}});
    CHECK(env["A"] == "env");
    CHECK(env["B"] == "arg");
}

TEST_CASE("a stage without PATH gets the default one, a PATH is kept", "[build_config]") {
    ImageState bare = scratch_state();
    ensure_default_path(bare);
    CHECK(env_list(bare) == std::vector<std::string>{std::string("PATH=") + runtime::kDefaultPath});
    ImageState set = with_env({"PATH=/mine"});
    ensure_default_path(set);
    CHECK(env_list(set) == std::vector<std::string>{"PATH=/mine"});
}

TEST_CASE("LABEL, then the request's labels over the Dockerfile's", "[build_config]") {
    ImageState s = scratch_state();
    CHECK(apply_labels(s, {{"a", "1"}, {"b c", "d e"}}) == "LABEL a=1 b c=d e");
    apply_request_labels(s, {{"a", "2"}, {"x", ""}});
    CHECK(config_object(s)["Labels"] == json{{"a", "2"}, {"b c", "d e"}, {"x", ""}});
    ImageState none = scratch_state();
    apply_request_labels(none, {});
    CHECK_FALSE(config_object(none).contains("Labels"));
}

TEST_CASE("CMD and ENTRYPOINT: shell form through SHELL, ENTRYPOINT drops only an inherited Cmd", "[build_config]") {
    ImageState s = scratch_state();
    config_object(s)["Cmd"] = {"inherited"};
    CHECK(command_args(s, CommandLine{{"echo", "hi"}, false}) == std::vector<std::string>{"/bin/sh", "-c", "echo hi"});
    CHECK(apply_entrypoint(s, {"/e"}) == "ENTRYPOINT [\"/e\"]");
    CHECK_FALSE(config_object(s).contains("Cmd"));
    CHECK(apply_cmd(s, {"a", "b"}) == "CMD [\"a\",\"b\"]");
    apply_entrypoint(s, {"/f"});
    CHECK(config_object(s)["Cmd"] == json{"a", "b"});
    config_object(s)["Shell"] = {"/bin/bash", "-xc"};
    CHECK(command_args(s, CommandLine{{"x"}, false}) == std::vector<std::string>{"/bin/bash", "-xc", "x"});
}

TEST_CASE("HEALTHCHECK in Docker's form: durations in ns, NONE", "[build_config]") {
    ImageState s = scratch_state();
    HealthcheckInstr h;
    h.test = CommandLine{{"curl", "-f", "x"}, false};
    h.interval = std::chrono::seconds(5);
    h.retries = 3;
    CHECK(apply_healthcheck(s, h) == "HEALTHCHECK [\"CMD-SHELL\",\"curl -f x\"]");
    CHECK(config_object(s)["Healthcheck"] ==
          json{{"Test", {"CMD-SHELL", "curl -f x"}}, {"Interval", 5000000000LL}, {"Retries", 3}});
    HealthcheckInstr none;
    none.none = true;
    apply_healthcheck(s, none);
    CHECK(config_object(s)["Healthcheck"] == json{{"Test", {"NONE"}}});
}

TEST_CASE("ONBUILD appends, EXPOSE and VOLUME keys are objects", "[build_config]") {
    ImageState s = scratch_state();
    CHECK(apply_onbuild(s, "RUN a") == "ONBUILD RUN a");
    apply_onbuild(s, "RUN b");
    CHECK(config_object(s)["OnBuild"] == json{"RUN a", "RUN b"});
    add_config_keys(s, "ExposedPorts", {"80/tcp"});
    add_config_keys(s, "ExposedPorts", {"53/udp"});
    CHECK(config_object(s)["ExposedPorts"] == json{{"80/tcp", json::object()}, {"53/udp", json::object()}});
}

TEST_CASE("WORKDIR: absolute kept as written, relative joined and cleaned", "[build_config]") {
    ImageState s = scratch_state();
    CHECK(normalize_workdir(s, "/a/b/") == "/a/b/");
    CHECK(normalize_workdir(s, "rel/") == "/rel");
    config_object(s)["WorkingDir"] = "/a/b/";
    CHECK(normalize_workdir(s, "../c") == "/a/c");
    CHECK(absolute_in_workdir(s, "f") == "/a/b/f");
    CHECK(absolute_in_workdir(s, "/g") == "/g");
}

TEST_CASE("history entries as BuildKit writes them, the config's date follows", "[build_config]") {
    CHECK(rfc3339(1234567890) == "2009-02-13T23:31:30Z");
    CHECK(history_entry("T", "ENV A=1", true) ==
          json{{"created", "T"}, {"created_by", "ENV A=1"}, {"comment", "buildkit.dockerfile.v0"}, {"empty_layer", true}});
    ImageState s = scratch_state();
    add_history(s, "T1", "RUN x # buildkit", false);
    add_history(s, "T2", "ENV A=1", true);
    REQUIRE(s.config["history"].size() == 2);
    CHECK_FALSE(s.config["history"][0].contains("empty_layer"));
    CHECK(s.config["created"] == "T2");
}

TEST_CASE("the final config: rootfs from the diff_ids, classic builder fields gone", "[build_config]") {
    ImageState s = scratch_state();
    s.config["container_config"] = json::object();
    s.config["docker_version"] = "20.10";
    s.diff_ids.push_back(oci::sha256_of("layer"));
    json c = final_config(s);
    CHECK(c["rootfs"] == json{{"type", "layers"}, {"diff_ids", {oci::sha256_of("layer").str()}}});
    CHECK_FALSE(c.contains("container_config"));
    CHECK_FALSE(c.contains("docker_version"));
}

TEST_CASE("cache keys: each input changes the key, the chain matters", "[build_keys]") {
    const oci::Digest parent = scratch_key(), other = image_key(oci::sha256_of("manifest"));
    CHECK(parent != other);
    CHECK(metadata_key(parent, "ENV A=1", std::nullopt) == metadata_key(parent, "ENV A=1", std::nullopt));
    CHECK(metadata_key(parent, "ENV A=1", std::nullopt) != metadata_key(other, "ENV A=1", std::nullopt));
    CHECK(metadata_key(parent, "ENV A=1", std::nullopt) != metadata_key(parent, "ENV A=1", 0));
    CHECK(metadata_key(parent, "ENV A=1", 1) != metadata_key(parent, "ENV A=1", 2));
    const auto base = layer_key(parent, "RUN x", "subuid:100000:65536", std::nullopt, {"a"});
    CHECK(base != layer_key(parent, "RUN x", "single:1000", std::nullopt, {"a"}));
    CHECK(base != layer_key(parent, "RUN x", "subuid:100000:65536", std::nullopt, {"b"}));
    CHECK(base != metadata_key(parent, "RUN x", std::nullopt));
    CHECK(run_key_parts({{"A", "1"}}, "none", {"mount"}) == std::vector<std::string>{"A=1", "network=none", "mount"});
    CHECK(workdir_key_parts(std::nullopt).empty());
    CHECK(workdir_key_parts(std::pair<std::uint32_t, std::uint32_t>{1000, 50}) == std::vector<std::string>{"owner=1000:50"});
    CHECK(heredoc_key_part("EOF", "x\n") == "<<EOF\nx\n");
}

TEST_CASE("stages by name or index among the earlier ones, the target's needs", "[build_stages]") {
    Dockerfile df = parse_dockerfile("FROM scratch AS One\nFROM scratch AS unused\nFROM one\nCOPY --from=0 /a /a\n"
                                     "FROM scratch\nRUN --mount=from=2,target=/m true\n",
                                     "Dockerfile");
    CHECK(stage_by_name(df, "ONE", 3) == 0);
    CHECK(stage_by_name(df, "1", 3) == 1);
    CHECK_FALSE(stage_by_name(df, "3", 3).has_value());
    CHECK_FALSE(stage_by_name(df, "busybox", 3).has_value());
    CHECK(needed_stages(df, 3, {}) == std::set<int>{0, 2, 3});
    CHECK(needed_stages(df, 1, {}) == std::set<int>{1});
    CHECK(is_scratch("SCRATCH"));
}

TEST_CASE("RUN argv: shell form through SHELL, a lone heredoc is the script", "[build_run_step]") {
    ImageState s = scratch_state();
    RunInstr r;
    r.command = CommandLine{{"echo", "$HOME"}, false};
    CHECK(run_argv(s, r) == std::vector<std::string>{"/bin/sh", "-c", "echo $HOME"});
    CHECK(run_history_text(run_argv(s, r), false) == "RUN /bin/sh -c echo $HOME");
    RunInstr exec;
    exec.command = CommandLine{{"/bin/true", "a"}, true};
    CHECK(run_history_text(run_argv(s, exec), true) == "RUN [\"/bin/true\",\"a\"]");
    RunInstr here;
    here.command = CommandLine{{"<<EOF"}, false};
    here.heredocs.push_back(Heredoc{"EOF", "echo one\n"});
    CHECK(run_argv(s, here) == std::vector<std::string>{"/bin/sh", "-c", "echo one\n"});
    here.command = CommandLine{{"cat", "<<EOF"}, false};
    CHECK(run_argv(s, here).back() == "cat <<EOF\necho one\nEOF");
}

TEST_CASE("RUN environment: ARGs Env does not set, proxy build args without an ARG", "[build_run_step]") {
    ImageState s = with_env({"A=env"});
    auto env = run_environment(s, {{"A", "arg"}, {"B", "2"}}, {{"http_proxy", "p"}, {"OTHER", "x"}});
    CHECK(env == std::vector<std::string>{"A=env", "B=2", "http_proxy=p"});
}

TEST_CASE("RUN process: PATH and HOME completed, USER resolved, single mode emulates it", "[build_run_step]") {
    RunProcess sub = run_process({"true"}, {}, "", "app", kUsers, runtime::UsernsMode::Subuid);
    CHECK(sub.process.uid == 1000);
    CHECK(sub.process.cwd == "/");
    CHECK(sub.process.env == std::vector<std::string>{std::string("PATH=") + runtime::kDefaultPath, "HOME=/home/app"});
    CHECK(sub.process.path_dirs.front() == "/usr/local/sbin");
    CHECK_FALSE(sub.emulate_root_ids);
    RunProcess single = run_process({"true"}, {"PATH=/x::/y", "HOME=/h"}, "/w", "app", kUsers, runtime::UsernsMode::Single);
    CHECK(single.process.uid == 0);
    CHECK(single.process.groups.empty());
    CHECK(single.process.path_dirs == std::vector<std::string>{"/x", "/y"});
    CHECK(single.process.env == std::vector<std::string>{"PATH=/x::/y", "HOME=/h"});
    CHECK(single.emulate_root_ids);
    REQUIRE(single.emulated_identity.has_value());
    CHECK(single.emulated_identity->uid == 1000);
    CHECK(single.emulated_identity->groups == std::vector<std::uint32_t>{50});
    REQUIRE(single.made_by.has_value());
    CHECK(single.made_by->uid == 1000);
    RunProcess root = run_process({"true"}, {}, "", "", kUsers, runtime::UsernsMode::Single);
    CHECK_FALSE(root.made_by.has_value());
}

TEST_CASE("COPY --chown: a uid alone is uid:uid, a name its primary group", "[build_copy_step]") {
    CHECK_FALSE(copy_owner("", kUsers).has_value());
    CHECK(copy_owner("7", kUsers)->gid == 7);
    CHECK(copy_owner("app", kUsers)->gid == 1000);
    CHECK(copy_owner("app:staff", kUsers)->gid == 50);
    CHECK(copy_owner("0:5", kUsers)->gid == 5);
}

TEST_CASE("the commit's manifest: OCI layer types, descriptor extras dropped", "[build_commit]") {
    oci::Descriptor layer;
    layer.media_type = std::string(oci::media_type::kDockerLayerGzip);
    layer.digest = oci::sha256_of("l");
    layer.annotations["a"] = "b";
    layer.urls.push_back("http://x");
    oci::Descriptor config;
    config.digest = oci::sha256_of("c");
    oci::Manifest m = image_manifest({layer}, config);
    REQUIRE(m.layers.size() == 1);
    CHECK(m.layers[0].media_type == oci::media_type::kOciLayerGzip);
    CHECK(m.layers[0].annotations.empty());
    CHECK(m.layers[0].urls.empty());
    CHECK(m.config.digest == config.digest);
}
