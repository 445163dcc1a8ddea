// ScopedEnv: sets (or unsets) an environment variable for one scope and puts back what was
// there. ScopedCwd: the same for the working directory.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>

#include "common/file.hpp"

struct ScopedEnv {
    std::string name;
    std::optional<std::string> old;
    ScopedEnv(const char* n, const std::optional<std::string>& value) : name(n), old(aishell::get_env(n)) {
        if (value) ::setenv(n, value->c_str(), 1);
        else ::unsetenv(n);
    }
    ~ScopedEnv() {
        if (old) ::setenv(name.c_str(), old->c_str(), 1);
        else ::unsetenv(name.c_str());
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;
};

struct ScopedCwd {
    std::filesystem::path old = std::filesystem::current_path();
    explicit ScopedCwd(const std::filesystem::path& dir) { std::filesystem::current_path(dir); }
    ~ScopedCwd() {
        std::error_code ec;
        std::filesystem::current_path(old, ec);
    }
    ScopedCwd(const ScopedCwd&) = delete;
    ScopedCwd& operator=(const ScopedCwd&) = delete;
};
