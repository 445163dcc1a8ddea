// The step spec between the engine and its step helper (build_step_spec.hpp): every field
// survives the wire form, bytes that are not UTF-8 included, and a spec of another version or
// a malformed one is refused with an Error.
#include <catch2/catch.hpp>

#include "common/error.hpp"
#include "composer/build_step_spec.hpp"
#include "oci/json_text.hpp"

using namespace aishell;
using namespace aishell::composer;

namespace {

StepSpec full_spec() {
    StepSpec s;
    s.store = "/store";
    s.lease = "/store/leases/build-1";
    s.run_dir = "/store/tmp/build-\xff\xfe";
    s.compression = "zstd";
    s.clamp = 1234567890;
    s.lower = {"aa", "bb"};
    CopyStepSpec c;
    c.request.sources = {"caf\xe9.txt", "<<EOF"};  // Latin-1, not UTF-8
    c.request.dest = "/d\x80st/";
    c.request.chown = CopyOwner{1000, 50};
    c.request.chmod = 0640;
    c.request.extract_archives = true;
    c.request.preserve_owner = true;
    c.request.heredocs = {{"EOF", "body \xc3\x28\n"}};
    c.request.instruction = "ADD";
    c.src_dir = "/ctx";
    c.src_layers = std::vector<std::string>{};
    c.ignore = std::vector<std::string>{"*.o", "!keep.o"};
    s.copy = c;
    s.mkdir = MkdirStepSpec{"/w\xff", CopyOwner{7, 8}};
    s.stubs = std::vector<std::string>{"/proc", "/run/\xfe"};
    s.owner = oci::LayerOwner{1000, 1000};
    return s;
}

void check_same(const StepSpec& a, const StepSpec& b) {
    CHECK(a.version == b.version);
    CHECK(a.store == b.store);
    CHECK(a.lease == b.lease);
    CHECK(a.run_dir == b.run_dir);
    CHECK(a.compression == b.compression);
    CHECK(a.clamp == b.clamp);
    CHECK(a.lower == b.lower);
    REQUIRE(a.copy.has_value() == b.copy.has_value());
    if (a.copy) {
        const CopyRequest &x = a.copy->request, &y = b.copy->request;
        CHECK(x.sources == y.sources);
        CHECK(x.dest == y.dest);
        CHECK(x.chown.has_value() == y.chown.has_value());
        if (x.chown) CHECK((x.chown->uid == y.chown->uid && x.chown->gid == y.chown->gid));
        CHECK(x.chmod == y.chmod);
        CHECK(x.extract_archives == y.extract_archives);
        CHECK(x.preserve_owner == y.preserve_owner);
        CHECK(x.heredocs == y.heredocs);
        CHECK(x.instruction == y.instruction);
        CHECK(a.copy->src_dir == b.copy->src_dir);
        CHECK(a.copy->src_layers == b.copy->src_layers);
        CHECK(a.copy->ignore == b.copy->ignore);
    }
    REQUIRE(a.mkdir.has_value() == b.mkdir.has_value());
    if (a.mkdir) {
        CHECK(a.mkdir->path == b.mkdir->path);
        CHECK(a.mkdir->owner.has_value() == b.mkdir->owner.has_value());
    }
    CHECK(a.stubs == b.stubs);
    CHECK(a.owner == b.owner);
}

}  // namespace

TEST_CASE("a step spec survives the wire byte for byte, non-UTF-8 strings included", "[build_step_spec]") {
    const StepSpec s = full_spec();
    const StepSpec back = decode_step_spec(encode_step_spec(s));
    check_same(s, back);
    CHECK(back.copy->request.sources[0] == std::string("caf\xe9.txt"));
    CHECK(back.copy->src_layers.has_value());  // an empty list is not "no layers"
}

TEST_CASE("a minimal step spec: the optional parts stay unset", "[build_step_spec]") {
    StepSpec s;
    s.store = "/s";
    s.run_dir = "/s/tmp/x";
    const StepSpec back = decode_step_spec(encode_step_spec(s));
    check_same(s, back);
    CHECK_FALSE(back.clamp.has_value());
    CHECK_FALSE(back.copy.has_value());
    CHECK_FALSE(back.stubs.has_value());
    CHECK_FALSE(back.owner.has_value());
    StepSpec copy_from_context;
    copy_from_context.copy = CopyStepSpec{};
    CHECK_FALSE(decode_step_spec(encode_step_spec(copy_from_context)).copy->src_layers.has_value());
}

TEST_CASE("a step spec of another version or malformed is refused", "[build_step_spec]") {
    nlohmann::json j = step_spec_to_json(full_spec());
    j["version"] = StepSpec::kVersion + 1;
    CHECK_THROWS_WITH(decode_step_spec(oci::to_message(j)), Catch::Contains("step spec version 2, this aishell reads 1"));
    j.erase("version");
    CHECK_THROWS_AS(decode_step_spec(oci::to_message(j)), Error);
    nlohmann::json missing = step_spec_to_json(full_spec());
    missing.erase("store");
    CHECK_THROWS_WITH(step_spec_from_json(missing), Catch::Contains("malformed step spec"));
    CHECK_THROWS_AS(decode_step_spec("\xc1"), Error);  // 0xc1 is never used in MessagePack
}
