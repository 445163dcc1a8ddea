#include "common/disk_usage.hpp"

#include <sys/stat.h>

#include <set>
#include <utility>

namespace aishell {

namespace fs = std::filesystem;

std::uint64_t disk_usage(const fs::path& path) {
    std::uint64_t total = 0;
    std::set<std::pair<dev_t, ino_t>> linked;  // inodes with more than one name, counted once
    auto add = [&](const fs::path& p) {
        struct stat st {};
        if (::lstat(p.c_str(), &st) != 0) return;
        if (st.st_nlink > 1 && !S_ISDIR(st.st_mode) && !linked.insert({st.st_dev, st.st_ino}).second) return;
        total += static_cast<std::uint64_t>(st.st_blocks) * 512;
    };
    add(path);
    std::error_code ec;
    fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
    for (; !ec && it != end; it.increment(ec)) add(it->path());
    return total;
}

}  // namespace aishell
