// TempDir: a fresh directory of one test (mkdtemp under $TMPDIR), removed with all it holds when
// the test ends: without following symlinks, and with 0000 or read-only directories (extracted
// layers, overlay work dirs) made writable first (oci::remove_tree_at).
#pragma once

#include <fcntl.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "common/unique_fd.hpp"
#include "oci/layer_extract.hpp"

struct TempDir {
    std::filesystem::path path;

    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "aishell-unit-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        aishell::UniqueFd parent(::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        try {
            aishell::oci::remove_tree_at(parent.get(), path.filename());
        } catch (...) {
        }
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    aishell::UniqueFd fd() const { return aishell::UniqueFd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); }
};
