// commit_image (composer/build_commit.hpp): the image's tags and what the caller records about
// them are written in one hold of the store lock, so a remover that takes the lock (prune) sees
// both or neither; a last check that throws leaves nothing tagged.
#include <catch2/catch.hpp>

#include <memory>
#include <stdexcept>

#include "common/error.hpp"
#include "composer/build_commit.hpp"
#include "oci/lease.hpp"
#include "oci/store.hpp"
#include "runtime/idmap.hpp"
#include "temp_dir.hpp"

namespace oci = aishell::oci;
using aishell::composer::CommitHooks;
using aishell::composer::commit_image;
using aishell::composer::Rollback;
using aishell::composer::scratch_state;

TEST_CASE("commit: on_tagged runs after the tags, in the same hold of the store lock", "[build][commit]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    Rollback rollback(store, aishell::runtime::IdMapping{}, oci::Lease::create(store, "build"), false, true);
    std::vector<std::string> steps;
    CommitHooks hooks;
    hooks.last_check = [&] {
        steps.push_back("last_check");
        CHECK_FALSE(store.find_image("aishell:ext-0123456789ab"));  // not tagged yet
        CHECK_FALSE(store.try_lock_exclusive());                   // the lock is held already
    };
    hooks.on_tagged = [&](const oci::StoreLock& lock, const oci::Descriptor& manifest) {
        steps.push_back("on_tagged");
        CHECK(lock.held());
        CHECK_FALSE(store.try_lock_exclusive());  // not released between the tag and here
        auto tagged = store.find_image("aishell:ext-0123456789ab");
        REQUIRE(tagged);
        CHECK(tagged->descriptor.digest == manifest.digest);
    };
    auto result = commit_image(store, scratch_state(), {"aishell:ext-0123456789ab"}, rollback, hooks);
    rollback.commit();
    CHECK(steps == std::vector<std::string>{"last_check", "on_tagged"});
    CHECK(store.find_image("aishell:ext-0123456789ab")->descriptor.digest == result.manifest.digest);
    CHECK(store.try_lock_exclusive());  // released once the commit returns
}

TEST_CASE("commit: a last check that throws tags nothing and records nothing", "[build][commit]") {
    TempDir dir;
    oci::Store store = oci::Store::open(dir.path);
    Rollback rollback(store, aishell::runtime::IdMapping{}, oci::Lease::create(store, "build"), false, true);
    bool recorded = false;
    CommitHooks hooks;
    hooks.last_check = [] { throw aishell::Error("interrupted"); };
    hooks.on_tagged = [&](const oci::StoreLock&, const oci::Descriptor&) { recorded = true; };
    CHECK_THROWS_AS(commit_image(store, scratch_state(), {"mine:1"}, rollback, hooks), aishell::Error);
    CHECK_FALSE(recorded);
    CHECK_FALSE(store.find_image("mine:1"));
}
