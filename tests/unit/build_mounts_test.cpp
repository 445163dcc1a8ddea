// RUN --mount's pure parts: --secret/--ssh values (buildx syntax), mount defaults after
// expansion (BuildKit's), cache dir names, and what the mounts add to the step cache key.
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/unique_fd.hpp"
#include "composer/build_mounts.hpp"
#include "runtime/mounts.hpp"
#include "temp_dir.hpp"

using namespace aishell;
using namespace aishell::composer;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.message();
    }
    return "";
}

bool no_env(const std::string&) { return false; }

void write(const fs::path& p, const std::string& data) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << data;
}

// A listening unix socket at path (closed with the returned fd).
UniqueFd listen_unix(const fs::path& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd.get(), 1) == 0);
    return fd;
}

RunMount mount(std::string type, std::map<std::string, std::string> options) {
    RunMount m;
    m.type = std::move(type);
    m.options = std::move(options);
    return m;
}

std::string same(const std::string& s) { return s; }

BuildMount one(const RunMount& m, const std::string& workdir = "/") {
    auto v = resolve_mounts({m}, same, workdir);
    REQUIRE(v.size() == 1);
    return v[0];
}

}  // namespace

TEST_CASE("flag --secret id=X,src=FILE and its spellings", "[build_mounts]") {
    auto s = parse_secret_flag("id=tok,src=/run/tok", no_env);
    CHECK(s.id == "tok");
    CHECK(s.file == "/run/tok");
    CHECK(s.env.empty());
    CHECK(parse_secret_flag("id=tok,source=/f", no_env).file == "/f");
    CHECK(parse_secret_flag("ID=tok,SRC=/f", no_env).file == "/f");
    CHECK(parse_secret_flag("\"id=a,b\",src=/f", no_env).id == "a,b");  // csv quoting
}

TEST_CASE("flag --secret env sources: env=VAR, type=env,src=VAR, and a bare id that is a set variable", "[build_mounts]") {
    auto e = parse_secret_flag("id=tok,env=TOKEN", no_env);
    CHECK(e.env == "TOKEN");
    CHECK(e.file.empty());
    auto t = parse_secret_flag("id=tok,type=env,src=TOKEN", no_env);
    CHECK(t.env == "TOKEN");
    CHECK(t.file.empty());
    auto set = parse_secret_flag("id=GITHUB_TOKEN", [](const std::string& n) { return n == "GITHUB_TOKEN"; });
    CHECK(set.env == "GITHUB_TOKEN");
    auto unset = parse_secret_flag("id=mytoken", no_env);
    CHECK(unset.file == "mytoken");
    CHECK(unset.env.empty());
    CHECK(parse_secret_flag("id=x,type=file", [](const std::string&) { return true; }).file == "x");
}

TEST_CASE("malformed --secret values are errors naming the value", "[build_mounts]") {
    CHECK(error_of([] { parse_secret_flag("src=/f", no_env); }) == "invalid --secret \"src=/f\": the secret has no id");
    CHECK(error_of([] { parse_secret_flag("id=a,bogus", no_env); }) ==
          "invalid --secret \"id=a,bogus\": field 'bogus' must be a key=value pair");
    CHECK(error_of([] { parse_secret_flag("id=a,color=red", no_env); }) ==
          "invalid --secret \"id=a,color=red\": unexpected key 'color' in 'color=red'");
    CHECK(error_of([] { parse_secret_flag("id=a,src=/f,env=V", no_env); }) ==
          "invalid --secret \"id=a,src=/f,env=V\": both a file and an env source");
    CHECK(error_of([] { parse_secret_flag("id=a,type=socket", no_env); }) ==
          "invalid --secret \"id=a,type=socket\": unsupported secret type \"socket\"");
}

TEST_CASE("secret sources are checked before the build: missing file, duplicate id, size limit", "[build_mounts]") {
    TempDir d;
    write(d.path / "ok", "s3cret");
    write(d.path / "big", std::string(500 * 1024 + 1, 'x'));
    CHECK_NOTHROW(check_secret_sources({{"a", (d.path / "ok").string(), ""}, {"b", "", "VAR"}}));
    CHECK(error_of([&] { check_secret_sources({{"a", (d.path / "missing").string(), ""}}); })
              .find("--secret id=a: stat " + (d.path / "missing").string()) == 0);
    CHECK(error_of([&] { check_secret_sources({{"a", "", "V"}, {"a", "", "W"}}); }) == "--secret id=a is given twice");
    CHECK(error_of([&] { check_secret_sources({{"a", (d.path / "big").string(), ""}}); }).find("is too big") !=
          std::string::npos);
    CHECK(read_secret({"a", (d.path / "ok").string(), ""}) == std::optional<std::string>("s3cret"));
    CHECK_FALSE(read_secret({"a", "", "AISHELL_TEST_SURELY_UNSET_VAR"}).has_value());
}

TEST_CASE("flag --ssh default takes $SSH_AUTH_SOCK, ID=SOCKET names one, key files and empty sockets are refused",
          "[build_mounts]") {
    TempDir d;
    auto sock = d.path / "agent.sock";
    UniqueFd l = listen_unix(sock);
    auto s = parse_ssh_flag("default", sock.string());
    CHECK(s.id == "default");
    CHECK(s.socket == sock.string());
    CHECK(parse_ssh_flag("", sock.string()).id == "default");
    auto named = parse_ssh_flag("work=" + sock.string(), std::nullopt);
    CHECK(named.id == "work");
    CHECK(named.socket == sock.string());
    CHECK(error_of([] { parse_ssh_flag("default", std::nullopt); }) ==
          "invalid --ssh \"default\": invalid empty ssh agent socket");
    write(d.path / "id_ed25519", "key");
    std::string key = (d.path / "id_ed25519").string();
    CHECK(error_of([&] { parse_ssh_flag("default=" + key, std::nullopt); }) ==
          "invalid --ssh \"default=" + key + "\": " + key + " is not a socket (forwarding key files is not supported)");
    CHECK(error_of([&] { parse_ssh_flag("x=" + sock.string() + "," + key, std::nullopt); })
              .find("more than one socket") != std::string::npos);
    CHECK(error_of([&] { parse_ssh_flag("x=" + (d.path / "nope").string(), std::nullopt); })
              .find("No such file or directory") != std::string::npos);
}

TEST_CASE("resolve_mounts fills BuildKit's defaults", "[build_mounts]") {
    auto c = one(mount("cache", {{"target", "cache"}, {"readonly", "false"}}), "/app");
    CHECK(c.target == "/app/cache");  // relative targets are under WORKDIR
    CHECK(c.id == "cache");           // the id defaults to the target as written
    CHECK(c.sharing == "shared");
    CHECK(c.source == "/");
    CHECK_FALSE(c.readonly);

    auto s = one(mount("secret", {{"id", "tok"}, {"readonly", "true"}}));
    CHECK(s.target == "/run/secrets/tok");
    CHECK(s.readonly);
    auto env_only = one(mount("secret", {{"id", "tok"}, {"env", "TOKEN"}, {"readonly", "true"}}));
    CHECK(env_only.target.empty());
    CHECK(env_only.env == std::optional<std::string>("TOKEN"));
    auto both = one(mount("secret", {{"id", "tok"}, {"env", "TOKEN"}, {"target", "/t"}}));
    CHECK(both.target == "/t");
    CHECK(one(mount("secret", {{"target", "/etc/pw.txt"}})).id == "pw.txt");
    CHECK(one(mount("secret", {{"source", "tok"}})).id == "tok");

    auto ssh = resolve_mounts({mount("ssh", {}), mount("ssh", {{"id", "work"}, {"target", "/s"}}), mount("ssh", {})}, same, "/");
    CHECK(ssh[0].id == "default");
    CHECK(ssh[0].target == "/run/buildkit/ssh_agent.0");
    CHECK(ssh[1].target == "/s");
    CHECK(ssh[2].target == "/run/buildkit/ssh_agent.2");

    auto b = one(mount("bind", {{"target", "/src/"}, {"source", "sub/../dir/"}, {"readonly", "true"}}));
    CHECK(b.target == "/src");
    CHECK(b.source == "/dir");
    auto t = one(mount("tmpfs", {{"target", "/t"}, {"size", "64m"}}));
    CHECK(t.size == std::optional<std::uint64_t>(64ull << 20));
}

TEST_CASE("mount options expand, and are checked again after expansion", "[build_mounts]") {
    auto expand = [](const std::string& w) {
        std::string out = w;
        for (auto [k, v] : std::map<std::string, std::string>{{"$DIR", "/var/cache/apt"}, {"$SH", "locked"}, {"$BAD", "often"}}) {
            auto pos = out.find(k);
            if (pos != std::string::npos) out.replace(pos, k.size(), v);
        }
        return out;
    };
    auto v = resolve_mounts({mount("cache", {{"target", "$DIR"}, {"sharing", "$SH"}})}, expand, "/");
    CHECK(v[0].target == "/var/cache/apt");
    CHECK(v[0].id == "/var/cache/apt");
    CHECK(v[0].sharing == "locked");
    CHECK(error_of([&] { resolve_mounts({mount("cache", {{"target", "/c"}, {"sharing", "$BAD"}})}, expand, "/"); }) ==
          "RUN --mount: unsupported sharing value \"often\"");
    CHECK(error_of([] { resolve_mounts({mount("cache", {{"target", "/"}})}, same, "/"); }) ==
          "RUN --mount: invalid mount target \"/\"");
    CHECK(error_of([] { resolve_mounts({mount("cache", {{"target", "/c"}, {"uid", "x"}})}, same, "/"); }) ==
          "RUN --mount: invalid uid \"x\"");
}

TEST_CASE("sizes as go-units RAMInBytes reads them", "[build_mounts]") {
    CHECK(parse_size_bytes("1024") == 1024);
    CHECK(parse_size_bytes("64m") == 64ull << 20);
    CHECK(parse_size_bytes("1.5g") == 3ull << 29);
    CHECK(parse_size_bytes("512 KiB") == 512ull << 10);
    CHECK(parse_size_bytes("2GB") == 2ull << 30);
    CHECK(error_of([] { parse_size_bytes("lots"); }) == "RUN --mount: invalid value for size: lots");
    // Beyond a double (std::stod threw out_of_range: "aishell: error: stod") or beyond 64 bits.
    const std::string huge = "1" + std::string(400, '0') + "g";
    CHECK(error_of([&] { parse_size_bytes(huge); }) == "RUN --mount: invalid value for size: " + huge);
    CHECK(error_of([] { parse_size_bytes("17179869184g"); }) == "RUN --mount: invalid value for size: 17179869184g");
    CHECK(parse_size_bytes("17179869183g") == 17179869183ull << 30);
}

TEST_CASE("a cache's dir name: its id, its from source and its creation settings", "[build_mounts]") {
    auto a = one(mount("cache", {{"target", "/root/.cache"}}));
    auto same_id = one(mount("cache", {{"target", "/other"}, {"id", "/root/.cache"}}));
    auto other = one(mount("cache", {{"target", "/root/.cache"}, {"id", "pip"}}));
    CHECK(cache_mount_dir_name(a, "") == cache_mount_dir_name(same_id, ""));
    CHECK(cache_mount_dir_name(a, "") != cache_mount_dir_name(other, ""));
    CHECK(cache_mount_dir_name(a, "") != cache_mount_dir_name(a, "sha256:1234"));
    CHECK(cache_mount_dir_name(a, "").size() == 64);
    // Sharing and read-only are how a cache is used, not which cache it is.
    auto locked = one(mount("cache", {{"target", "/root/.cache"}, {"sharing", "locked"}, {"readonly", "true"}}));
    CHECK(cache_mount_dir_name(a, "") == cache_mount_dir_name(locked, ""));
    auto owned = one(mount("cache", {{"target", "/root/.cache"}, {"uid", "1000"}}));
    CHECK(cache_mount_dir_name(a, "") != cache_mount_dir_name(owned, ""));
}

TEST_CASE("the step cache key has each mount's spec and the bound context files, never a cache's or a secret's content",
          "[build_mounts]") {
    TempDir d;
    write(d.path / "ctx/src/a.txt", "a");
    write(d.path / "ctx/other.txt", "o");
    MountInputs in;
    in.context = d.path / "ctx";
    std::vector<SecretSource> secrets{{"tok", (d.path / "secret").string(), ""}};
    in.secrets = &secrets;
    in.from_key = [](const std::string& from) { return oci::sha256_of("stage " + from); };

    auto key = [&](const std::vector<RunMount>& ms) { return mount_key_parts(resolve_mounts(ms, same, "/"), in); };
    auto bind = std::vector<RunMount>{mount("bind", {{"target", "/s"}, {"source", "src"}, {"readonly", "true"}})};
    auto k1 = key(bind);
    REQUIRE(k1.size() == 2);
    CHECK(k1[0].find("\"type\":\"bind\"") != std::string::npos);
    write(d.path / "ctx/other.txt", "changed");  // outside the bound source
    CHECK(key(bind) == k1);
    write(d.path / "ctx/src/a.txt", "changed");
    CHECK(key(bind) != k1);

    auto secret = std::vector<RunMount>{mount("secret", {{"id", "tok"}})};
    write(d.path / "secret", "one");
    auto s1 = key(secret);
    write(d.path / "secret", "two");
    CHECK(key(secret) == s1);
    CHECK(s1.size() == 1);
    CHECK(s1[0].find("one") == std::string::npos);

    auto cache = std::vector<RunMount>{mount("cache", {{"target", "/c"}})};
    CHECK(key(cache).size() == 1);
    CHECK(key(cache) != key({mount("cache", {{"target", "/c"}, {"id", "other"}})}));
    auto from = key({mount("cache", {{"target", "/c"}, {"from", "builder"}})});
    REQUIRE(from.size() == 2);
    CHECK(from[1] == "from " + oci::sha256_of("stage builder").str());

    CHECK(error_of([&] { key({mount("bind", {{"target", "/s"}, {"source", "missing"}})}); })
              .find("RUN --mount=type=bind,source=/missing (build context)") == 0);
}

TEST_CASE("a build's own mounts come after the binds and before the masked paths", "[build_mounts][mounts]") {
    runtime::MountPlanInput in;
    in.extra.push_back(runtime::make_fs_step("tmpfs", "/cache", MS_NOSUID, "size=1024"));
    in.extra.push_back(runtime::make_bind_step("/dev/null", "/run/secrets/x", false, true));
    auto steps = runtime::plan_mounts(in);
    auto at = [&](const std::string& target) {
        return std::find_if(steps.begin(), steps.end(), [&](const runtime::MountStep& s) { return s.target == target; }) -
               steps.begin();
    };
    CHECK(at("/cache") < at("/run/secrets/x"));
    CHECK(at("/etc/hosts") < at("/cache"));
    CHECK(at("/run/secrets/x") < at("/proc/kcore"));
    const auto& secret = steps[static_cast<std::size_t>(at("/run/secrets/x"))];
    CHECK(secret.kind == runtime::MountStep::Kind::Bind);
    CHECK(secret.read_only);
    CHECK_FALSE(secret.target_is_dir);
}
