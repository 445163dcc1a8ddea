// File helpers used across modules: whole-file reads with a size cap, durable atomic writes,
// directory creation, and a temp file that is removed unless committed by rename.
#pragma once

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/unique_fd.hpp"

namespace aishell {

namespace fs = std::filesystem;

// Opens path with flags (O_CLOEXEC added); throws SystemError naming the path.
UniqueFd open_file(const fs::path& path, int flags, mode_t mode = 0644);

// Reads a whole file; throws if it is larger than max_size.
std::string read_file(const fs::path& path, std::uint64_t max_size = 64 * 1024 * 1024);
// Same, but returns nullopt when the file does not exist.
std::optional<std::string> read_file_if_exists(const fs::path& path,
                                               std::uint64_t max_size = 64 * 1024 * 1024);

// Writes all of data to fd, retrying on EINTR and short writes.
void write_all(int fd, std::string_view data, std::string_view what);

void fsync_fd(int fd, std::string_view what);
void fsync_dir(const fs::path& dir);

// Replaces path with data atomically and durably: temp file in the same dir, fsync, rename,
// fsync the dir. Readers see the old or the new content, never a mix.
void write_file_atomic(const fs::path& path, std::string_view data, mode_t mode = 0644);

// mkdir -p with a mode for the created dirs.
void make_dirs(const fs::path& path, mode_t mode = 0755);

// A file created with O_EXCL under dir, unlinked on destruction unless commit() renamed it.
class TempFile {
public:
    TempFile(const fs::path& dir, std::string_view prefix, mode_t mode = 0644);
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    TempFile(TempFile&&) noexcept;
    TempFile& operator=(TempFile&&) noexcept;
    ~TempFile();

    int fd() const noexcept { return fd_.get(); }
    const fs::path& path() const noexcept { return path_; }
    // fsyncs, closes and renames onto target; fsyncs target's dir.
    void commit(const fs::path& target);
    // Closes and renames onto target without fsync: for caches, whose readers check what they
    // read, so an entry a crash tore or lost is only a miss.
    void replace(const fs::path& target);
    // Keeps the file on disk (e.g. a partial download to resume later) and forgets it.
    void keep() noexcept;

private:
    UniqueFd fd_;
    fs::path path_;
    bool owned_ = false;
};

// A stat time (st_mtim, st_ctim) or a clock_gettime result as nanoseconds since the epoch.
inline std::int64_t ns_of(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

// Random lowercase hex string of n characters (from getrandom).
std::string random_hex(std::size_t n);

// Environment helpers.
std::optional<std::string> get_env(const char* name);
fs::path home_dir();

}  // namespace aishell
