// Disk usage of a file or tree, for the space `aishell volumes prune` and `aishell check` report.
#pragma once

#include <cstdint>
#include <filesystem>

namespace aishell {

// Disk space a file or tree takes (st_blocks, as `du`), each hard-linked inode once. What
// cannot be read (a directory of another owner, mode 0700) is left out, so it is a lower bound.
std::uint64_t disk_usage(const std::filesystem::path& path);

}  // namespace aishell
