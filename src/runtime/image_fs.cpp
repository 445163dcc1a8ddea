// The merged view of layer trees, read without mounting (see image_fs.hpp).
#include "runtime/image_fs.hpp"

#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <deque>

#include "common/path_components.hpp"

namespace aishell::runtime {

namespace {

namespace fs = std::filesystem;

constexpr int kMaxSymlinks = 40;  // MAXSYMLINKS, path_resolution(7)

// A directory of the merged view: its path below the root and the layers (indices, top first)
// whose trees have it as a real directory that shows through.
struct MergedDir {
    std::string rel;
    std::vector<std::size_t> layers;
};

bool is_whiteout(const struct stat& st) { return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0); }

// An opaque dir hides the same dir of lower layers (as layer_extract.cpp marks them).
bool is_opaque(const fs::path& dir) {
    char value[2];
    for (const char* name : {"user.overlay.opaque", "trusted.overlay.opaque"})
        if (::lgetxattr(dir.c_str(), name, value, sizeof value) == 1 && value[0] == 'y') return true;
    return false;
}

std::deque<std::string> split_path(const std::string& path) {
    std::deque<std::string> out;
    for (std::string_view component : PathComponents(path)) out.emplace_back(component);
    return out;
}

class Resolver {
public:
    Resolver(const fs::path& layers_dir, const std::vector<std::string>& layers) : dir_(layers_dir), layers_(layers) {}

    std::optional<ImageEntry> resolve(const std::string& path) {
        std::deque<std::string> todo = split_path(path);
        std::vector<MergedDir> stack{root()};
        int links = 0;
        while (!todo.empty()) {
            std::string name = std::move(todo.front());
            todo.pop_front();
            if (name == ".") continue;
            if (name == "..") {
                if (stack.size() > 1) stack.pop_back();
                continue;
            }
            const MergedDir& here = stack.back();
            const std::string rel = here.rel + "/" + name;
            auto top = topmost(here, rel);
            if (!top) return std::nullopt;
            auto [index, st] = *top;
            if (S_ISLNK(st.st_mode)) {
                if (++links > kMaxSymlinks) return std::nullopt;
                auto target = read_link(host(index, rel));
                if (!target) return std::nullopt;
                auto parts = split_path(*target);
                todo.insert(todo.begin(), parts.begin(), parts.end());
                if (target->front() == '/') stack.resize(1);
                continue;
            }
            if (S_ISDIR(st.st_mode)) {
                stack.push_back(merged_dir(here, rel, index));
                continue;
            }
            if (!todo.empty()) return std::nullopt;  // ENOTDIR
            return ImageEntry{host(index, rel), st};
        }
        const MergedDir& last = stack.back();
        ImageEntry entry{host(last.layers.front(), last.rel), {}};
        if (::lstat(entry.host_path.c_str(), &entry.st) != 0) return std::nullopt;
        return entry;
    }

private:
    fs::path host(std::size_t index, const std::string& rel) const { return dir_ / layers_[index] / rel.substr(rel.empty() ? 0 : 1); }

    MergedDir root() const {
        MergedDir d;
        for (std::size_t i = 0; i < layers_.size(); ++i) d.layers.push_back(i);
        return d;
    }

    // The topmost layer of here's that has rel; a whiteout there means rel does not exist.
    std::optional<std::pair<std::size_t, struct stat>> topmost(const MergedDir& here, const std::string& rel) const {
        for (std::size_t index : here.layers) {
            struct stat st {};
            if (::lstat(host(index, rel).c_str(), &st) != 0) continue;
            if (is_whiteout(st)) return std::nullopt;
            return std::make_pair(index, st);
        }
        return std::nullopt;
    }

    // rel is a dir in layer `top`; the lower layers' dirs of the same path merge below it until
    // an opaque dir, a whiteout or a non-dir (which hides everything under it).
    MergedDir merged_dir(const MergedDir& here, const std::string& rel, std::size_t top) const {
        MergedDir d{rel, {top}};
        if (is_opaque(host(top, rel))) return d;
        for (std::size_t index : here.layers) {
            if (index <= top) continue;
            struct stat st {};
            if (::lstat(host(index, rel).c_str(), &st) != 0) continue;
            if (!S_ISDIR(st.st_mode)) break;
            d.layers.push_back(index);
            if (is_opaque(host(index, rel))) break;
        }
        return d;
    }

    static std::optional<std::string> read_link(const fs::path& p) {
        char buf[4096];
        ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
        if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf) return std::nullopt;
        return std::string(buf, static_cast<std::size_t>(n));
    }

    const fs::path& dir_;
    const std::vector<std::string>& layers_;
};

}  // namespace

std::optional<ImageEntry> lookup_in_image(const fs::path& layers_dir, const std::vector<std::string>& layers,
                                          const std::string& path) {
    if (layers.empty()) return std::nullopt;
    return Resolver(layers_dir, layers).resolve(path);
}

bool image_has_executable(const fs::path& layers_dir, const std::vector<std::string>& layers,
                          const std::vector<std::string>& path_dirs, const std::string& name) {
    for (const auto& dir : path_dirs) {
        if (dir.empty() || dir.front() != '/') continue;  // a relative PATH entry depends on the cwd
        auto entry = lookup_in_image(layers_dir, layers, dir + "/" + name);
        if (entry && S_ISREG(entry->st.st_mode) && (entry->st.st_mode & 0111) != 0) return true;
    }
    return false;
}

}  // namespace aishell::runtime
