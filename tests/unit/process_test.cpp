// runtime/process.hpp: the owner a build's file operation gives USER (BuildKit's readUser).
#include <catch2/catch.hpp>

#include <algorithm>

#include "oci/types.hpp"
#include "runtime/process.hpp"

using namespace aishell::runtime;

TEST_CASE("a file operation's owner follows BuildKit: unknown names are root", "[process]") {
    const UserDb db{"root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1001::/home/dev:/bin/sh\n",
                    "root:x:0:\ndevs:x:1001:\nstaff:x:50:dev\n"};
    auto owner = [&](const std::string& spec) {
        auto u = resolve_file_owner(spec, db);
        return std::make_pair(u.uid, u.gid);
    };
    using P = std::pair<std::uint32_t, std::uint32_t>;
    CHECK(owner("dev") == P{1000, 1001});        // the primary group, no supplementary ones
    CHECK(owner("1000") == P{1000, 1000});       // a bare uid is uid:uid, known or not
    CHECK(owner("4242") == P{4242, 4242});
    CHECK(owner("dev:staff") == P{1000, 50});
    CHECK(owner("dev:7") == P{1000, 7});
    CHECK(owner("nosuchuser") == P{0, 0});       // resolve_user throws here; BuildKit uses 0
    CHECK(owner("nosuchuser:staff") == P{0, 50});
    CHECK(owner("1000:nosuchgroup") == P{1000, 1000});
    CHECK(owner("dev:nosuchgroup") == P{1000, 1001});
    CHECK(resolve_file_owner("dev", UserDb{}).uid == 0);  // no /etc/passwd at all
    CHECK_THROWS(resolve_user("nosuchuser", db));
}

TEST_CASE("no command with default_shell: bash when the image's PATH has it, else sh, after the ENTRYPOINT", "[process]") {
    auto config = aishell::oci::ImageConfig::parse(
        R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},)"
        R"("config":{"Entrypoint":["/entry"],"Cmd":["/bin/server"],"Env":["PATH=/opt/bin:/bin","LANG=C"]}})");
    ProcessOptions opts;
    opts.default_shell = true;
    std::vector<std::string> searched;
    auto has = [&](bool answer) {
        return [&searched, answer](const std::string& name, const std::vector<std::string>& dirs) {
            searched = dirs;
            return name == "bash" && answer;
        };
    };
    CHECK(build_process(config, opts, {}, std::nullopt, has(true)).argv == std::vector<std::string>{"/entry", "bash"});
    CHECK(searched == std::vector<std::string>{"/opt/bin", "/bin"});
    CHECK(build_process(config, opts, {}, std::nullopt, has(false)).argv == std::vector<std::string>{"/entry", "sh"});
    opts.env = {"PATH=/only"};
    build_process(config, opts, {}, std::nullopt, has(true));
    CHECK(searched == std::vector<std::string>{"/only"});  // the PATH the command will have
    opts.command = {"make"};
    CHECK(build_process(config, opts, {}, std::nullopt, has(true)).argv == std::vector<std::string>{"/entry", "make"});
    opts.command.clear();
    opts.default_shell = false;
    CHECK(build_process(config, opts, {}, std::nullopt, has(true)).argv == std::vector<std::string>{"/entry", "/bin/server"});
}

TEST_CASE("host variables go over the image's Env and under -e", "[process]") {
    auto config = aishell::oci::ImageConfig::parse(
        R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},)"
        R"("config":{"Env":["LANG=C","TERM=dumb","KEEP=1"]}})");
    ProcessOptions opts;
    opts.host_env = {"LANG=de_DE.UTF-8", "TERM=xterm-256color", "TZ=UTC"};
    opts.env = {"TERM=vt100"};
    auto env = build_process(config, opts, {}, std::nullopt).env;
    auto has = [&](const std::string& kv) { return std::find(env.begin(), env.end(), kv) != env.end(); };
    CHECK(has("LANG=de_DE.UTF-8"));
    CHECK(has("TERM=vt100"));
    CHECK(has("TZ=UTC"));
    CHECK(has("KEEP=1"));
}
