// The Dockerfile corpus: every tests/fixtures/dockerfiles/NAME.Dockerfile is parsed and rendered
// as `aishell build --check --json` renders it (target platform linux/amd64, or what
// NAME.options.json says), and compared with NAME.expected.json, a parse tree checked by hand
// against BuildKit's documented behaviour (continuations, escapes, heredocs, JSON forms,
// substitutions).
#include <catch2/catch.hpp>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "composer/dockerfile_json.hpp"
#include "composer/instructions.hpp"

using namespace aishell;
using namespace aishell::composer;

namespace {

fs::path corpus_dir() {
    if (auto dir = get_env("AISHELL_FIXTURES_DIR")) return fs::path(*dir) / "dockerfiles";
    return fs::path(AISHELL_TESTS_DIR) / "fixtures" / "dockerfiles";
}

std::vector<std::string> corpus_names() {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(corpus_dir())) {
        std::string file = entry.path().filename().string();
        const std::string suffix = ".Dockerfile";
        if (file.size() > suffix.size() && file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0)
            names.push_back(file.substr(0, file.size() - suffix.size()));
    }
    std::sort(names.begin(), names.end());
    return names;
}

CheckOptions corpus_options(const std::string& name) {
    CheckOptions options{{}, "linux/amd64"};
    if (auto text = read_file_if_exists(corpus_dir() / (name + ".options.json"))) {
        auto j = nlohmann::json::parse(*text);
        if (j.contains("build_args")) options.build_args = j["build_args"].get<std::map<std::string, std::string>>();
        if (j.contains("platform")) options.target_platform = j["platform"].get<std::string>();
    }
    return options;
}

}  // namespace

TEST_CASE("corpus: every Dockerfile parses to its expected tree", "[dockerfile][corpus]") {
    auto names = corpus_names();
    REQUIRE(names.size() >= 7);
    for (const auto& name : names) {
        INFO("corpus file " << name << ".Dockerfile");
        const std::string text = read_file(corpus_dir() / (name + ".Dockerfile"));
        auto expected_text = read_file_if_exists(corpus_dir() / (name + ".expected.json"));
        REQUIRE(expected_text);
        Dockerfile df = parse_dockerfile(text, name + ".Dockerfile");
        nlohmann::json actual = dockerfile_to_json(df, corpus_options(name));
        nlohmann::json expected = nlohmann::json::parse(*expected_text);
        CHECK(actual.dump(2) == expected.dump(2));
    }
}

TEST_CASE("corpus: CRLF line endings and a byte order mark parse like plain LF", "[dockerfile][corpus]") {
    const std::string text = read_file(corpus_dir() / "continuations.Dockerfile");
    std::string crlf = "\xEF\xBB\xBF";
    for (char c : text) {
        if (c == '\n') crlf += '\r';
        crlf += c;
    }
    auto options = corpus_options("continuations");
    CHECK(dockerfile_to_json(parse_dockerfile(crlf, "continuations.Dockerfile"), options) ==
          dockerfile_to_json(parse_dockerfile(text, "continuations.Dockerfile"), options));
}

TEST_CASE("corpus: truncated and mutated files parse or fail with an aishell error", "[dockerfile][corpus]") {
    // Every prefix of every corpus file, and each byte replaced by a character the lexers treat
    // specially: the parser must never crash or throw anything but aishell::Error (which the
    // CLI turns into one "FILE:LINE: ..." line).
    const char specials[] = {'"', '\'', '\\', '$', '{', '[', '\n', '=', '`', '<'};
    std::size_t parsed = 0, rejected = 0;
    auto attempt = [&](const std::string& text, const std::string& name) {
        try {
            Dockerfile df = parse_dockerfile(text, name);
            (void)dockerfile_to_json(df, CheckOptions{{}, "linux/amd64"});
            ++parsed;
        } catch (const Error& e) {
            CHECK(std::string(e.what()).rfind(name, 0) == 0);  // every message names the file
            ++rejected;
        }
    };
    for (const auto& name : corpus_names()) {
        INFO("corpus file " << name);
        const std::string text = read_file(corpus_dir() / (name + ".Dockerfile"));
        for (std::size_t n = 0; n <= text.size(); ++n) attempt(text.substr(0, n), name + ".Dockerfile");
        for (std::size_t i = 0; i < text.size(); ++i) {
            std::string mutated = text;
            mutated[i] = specials[i % sizeof specials];
            attempt(mutated, name + ".Dockerfile");
        }
    }
    CHECK(parsed > 0);
    CHECK(rejected > 0);
}
