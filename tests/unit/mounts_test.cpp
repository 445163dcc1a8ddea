// The mount plan: order, flags and options the child will execute.
#include <sys/mount.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "runtime/mounts.hpp"

using namespace aishell::runtime;
using Kind = MountStep::Kind;

namespace {
const MountStep* find(const std::vector<MountStep>& steps, const std::string& target, Kind kind) {
    auto it = std::find_if(steps.begin(), steps.end(), [&](const MountStep& s) { return s.target == target && s.kind == kind; });
    return it == steps.end() ? nullptr : &*it;
}
std::size_t index_of(const std::vector<MountStep>& steps, const MountStep* s) { return static_cast<std::size_t>(s - steps.data()); }
}  // namespace

TEST_CASE("proc, a minimal /dev and devpts without gid=5 when group 5 is unmapped", "[mounts]") {
    auto steps = plan_mounts({true, false, {}});
    REQUIRE(steps.front().target == "/proc");
    CHECK(steps.front().flags == (MS_NOSUID | MS_NOEXEC | MS_NODEV));
    for (const char* dev : {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}) {
        auto* s = find(steps, dev, Kind::Bind);
        REQUIRE(s);
        CHECK(s->source == dev);
        CHECK_FALSE(s->target_is_dir);
    }
    auto* pts = find(steps, "/dev/pts", Kind::Fs);
    REQUIRE(pts);
    CHECK(pts->data == "newinstance,ptmxmode=0666,mode=0620");
    CHECK(find(steps, "/dev/ptmx", Kind::Symlink)->source == "pts/ptmx");
    CHECK(find(plan_mounts({true, true, {}}), "/dev/pts", Kind::Fs)->data == "newinstance,ptmxmode=0666,mode=0620,gid=5");
    CHECK(find(steps, "/dev/shm", Kind::Fs)->fstype == "tmpfs");
}

TEST_CASE("/sys: read-only rbind with host network, fresh sysfs with its own", "[mounts]") {
    auto host = plan_mounts({true, false, {}});
    auto* b = find(host, "/sys", Kind::Bind);
    REQUIRE(b);
    CHECK(b->read_only);
    CHECK(find(host, "/etc/resolv.conf", Kind::Bind));
    CHECK(find(host, "/etc/hosts", Kind::Bind)->read_only);
    auto none = plan_mounts({false, false, {}});
    auto* s = find(none, "/sys", Kind::Fs);
    REQUIRE(s);
    CHECK((s->flags & MS_RDONLY) != 0);
    CHECK_FALSE(find(none, "/etc/resolv.conf", Kind::Bind));
}

TEST_CASE("user binds come after /dev and /proc, masks and read-only paths last", "[mounts]") {
    BindSpec b{"/tmp", "/work", true};
    auto steps = plan_mounts({true, false, {b}});
    auto* bind = find(steps, "/work", Kind::Bind);
    REQUIRE(bind);
    CHECK(bind->read_only);
    CHECK(bind->target_is_dir);
    auto* kcore = find(steps, "/proc/kcore", Kind::Mask);
    auto* sys = find(steps, "/proc/sys", Kind::ReadOnly);
    REQUIRE(kcore);
    REQUIRE(sys);
    CHECK(index_of(steps, bind) > index_of(steps, find(steps, "/dev/pts", Kind::Fs)));
    CHECK(index_of(steps, kcore) > index_of(steps, bind));
    for (const auto& p : {"/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
                          "/proc/acpi", "/proc/latency_stats", "/proc/timer_stats", "/sys/devices/virtual/powercap"})
        CHECK(find(steps, p, Kind::Mask));
    for (const auto& p : {"/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"}) CHECK(find(steps, p, Kind::ReadOnly));
}

TEST_CASE("bind specs from -v HOST:CONTAINER[:ro] are parsed and checked", "[mounts]") {
    auto b = parse_bind("/tmp/:/data/:ro");
    CHECK(b.host == "/tmp");
    CHECK(b.container == "/data");
    CHECK(b.read_only);
    CHECK_FALSE(parse_bind("/tmp:/data:rw").read_only);
    CHECK_THROWS_WITH(parse_bind("/tmp"), "bad volume '/tmp'");
    CHECK_THROWS_WITH(parse_bind("/tmp:data"), "bad volume '/tmp:data'");
    CHECK_THROWS_WITH(parse_bind("/tmp:/d:rx"), "bad volume option 'rx' in '/tmp:/d:rx'");
    CHECK_THROWS_WITH(parse_bind("/nonexistent-aishell:/d"), Catch::Contains("volume source /nonexistent-aishell"));
}

TEST_CASE("run -v sources: a path starts with / or ., anything else names a volume (podman's rule)", "[mounts]") {
    CHECK(is_volume_source("cache"));
    CHECK(is_volume_source("a/b"));  // a volume name, refused later as one
    CHECK_FALSE(is_volume_source("/abs"));
    CHECK_FALSE(is_volume_source("./rel"));
    CHECK_FALSE(is_volume_source(".."));
    auto a = split_volume_arg("cache:/c:ro");
    CHECK((a.source == "cache" && a.container == "/c" && a.read_only));
}

TEST_CASE("the store is masked wherever a bind shows it", "[mounts]") {
    std::vector<BindSpec> binds{{"/home/me", "/home/me", false},
                                {"/home/me/.local", "/mnt/local", false},
                                {"/srv/data", "/data", false}};
    auto masks = masks_under_binds("/home/me/.local/share/aishell", binds);
    REQUIRE(masks.size() == 2);
    CHECK((masks[0].kind == Kind::Mask && masks[0].target == "/home/me/.local/share/aishell"));
    CHECK(masks[1].target == "/mnt/local/share/aishell");
    CHECK(masks_under_binds("/home/me", {{"/home/me", "/p", false}}).at(0).target == "/p");
    CHECK(masks_under_binds("/home/mex/store", {{"/home/me", "/p", false}}).empty());
}
