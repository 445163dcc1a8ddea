// The build's step helper protocol (composer/build_step.hpp): serve_build_steps answers each
// step request with one reply (an error for what it cannot run), removes the dirs it is given
// without answering, and ends when the channel closes. The helper runs in a forked child here;
// real steps (which need a user namespace) are covered end to end by tests/integration/test_build_*.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"
#include "composer/build_step.hpp"
#include "oci/json_text.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using aishell::UniqueFd;
using nlohmann::json;

namespace {

// The helper in a child process, on one end of a socketpair.
struct Served {
    UniqueFd channel;
    pid_t pid = -1;
    Served() {
        int fds[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
        pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::close(fds[0]);
            ::_exit(aishell::composer::serve_build_steps(fds[1]));
        }
        ::close(fds[1]);
        channel = UniqueFd(fds[0]);
    }
    ~Served() {
        if (pid > 0) {
            channel.reset();
            ::waitpid(pid, nullptr, 0);
        }
    }
    void send_raw(const std::string& bytes) const {
        REQUIRE(::write(channel.get(), bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    }
    void send(const json& message) const {
        std::string body = aishell::oci::to_message(message);  // MessagePack: strings keep their bytes
        std::uint64_t n = body.size();
        send_raw(std::string(reinterpret_cast<const char*>(&n), sizeof n) + body);
    }
    json receive() const {
        std::uint64_t n = 0;
        REQUIRE(::read(channel.get(), &n, sizeof n) == static_cast<ssize_t>(sizeof n));
        std::string body(n, '\0');
        std::size_t got = 0;
        while (got < n) {
            ssize_t r = ::read(channel.get(), body.data() + got, n - got);
            REQUIRE(r > 0);
            got += static_cast<std::size_t>(r);
        }
        json reply = aishell::oci::from_message(body);
        REQUIRE_FALSE(reply.is_discarded());
        return reply;
    }
    // Closes the channel; the helper's exit status.
    int finish() {
        channel.reset();
        int st = 0;
        REQUIRE(::waitpid(pid, &st, 0) == pid);
        pid = -1;
        REQUIRE(WIFEXITED(st));
        return WEXITSTATUS(st);
    }
};

}  // namespace

TEST_CASE("step helper: a step it cannot run gets one error reply, and it serves the next request", "[build_step]") {
    Served helper;
    helper.send({{"op", "step"}, {"spec", {{"version", aishell::composer::StepSpec::kVersion}}}});  // no store, no run dir
    json reply = helper.receive();
    REQUIRE(reply.contains("error"));
    CHECK(reply["error"].get<std::string>().find("store") != std::string::npos);
    CHECK_FALSE(reply.contains("result"));

    TempDir dir;
    aishell::composer::StepSpec spec;
    spec.store = (dir.path / "store").string();
    spec.run_dir = (dir.path / "nope").string();
    helper.send({{"op", "step"}, {"spec", aishell::composer::step_spec_to_json(spec)}});
    reply = helper.receive();
    REQUIRE(reply.contains("error"));
    CHECK(reply["error"].get<std::string>().find((dir.path / "nope").string()) != std::string::npos);

    helper.send({{"op", "frobnicate"}});
    reply = helper.receive();
    CHECK(reply.value("error", "") == "build step helper: malformed request");
    CHECK(helper.finish() == 0);
}

TEST_CASE("step helper: rm removes a work dir (unreadable subdirs too) without a reply, and EOF ends it", "[build_step]") {
    TempDir dir;
    const fs::path work = dir.path / "build-1";
    fs::create_directories(work / "work" / "work");
    std::ofstream(work / "work" / "work" / "f") << "x";
    ::chmod((work / "work" / "work").c_str(), 0);  // as overlayfs leaves its work dir
    std::ofstream(work / "owners") << "";
    Served helper;
    helper.send({{"op", "rm"}, {"path", work.string()}});
    // No reply to rm: the next reply is the one to this request.
    helper.send({{"op", "step"}, {"spec", json::object()}});
    CHECK(helper.receive().contains("error"));
    CHECK(helper.finish() == 0);
    CHECK_FALSE(fs::exists(work));
}

TEST_CASE("step helper: a frame longer than the limit ends it like EOF", "[build_step]") {
    Served helper;
    std::uint64_t huge = std::uint64_t{1} << 40;
    helper.send_raw(std::string(reinterpret_cast<const char*>(&huge), sizeof huge));
    char byte;
    CHECK(::read(helper.channel.get(), &byte, 1) == 0);  // closed without a reply
    CHECK(helper.finish() == 0);
}
