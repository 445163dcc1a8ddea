// Looking paths up in an image's merged view without mounting it: the layer trees (top first)
// read as overlayfs would show them (a whiteout hides what is below it, an opaque dir hides the
// lower dirs of the same path, a non-dir hides everything below), with symlinks resolved
// inside the image (an absolute target starts again at the image's root, never the host's).
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace aishell::runtime {

struct ImageEntry {
    std::filesystem::path host_path;  // the entry in the layer tree that shows it
    struct stat st {};                // its lstat (never a symlink: they are followed)
};

// The entry path names in the merged view of layers (top first, names under layers_dir),
// following symlinks (at most 40, as the kernel's MAXSYMLINKS); none when it does not exist.
std::optional<ImageEntry> lookup_in_image(const std::filesystem::path& layers_dir,
                                          const std::vector<std::string>& layers, const std::string& path);

// Whether name is an executable regular file in one of path_dirs of the image, as execvp(3)
// would find it there.
bool image_has_executable(const std::filesystem::path& layers_dir, const std::vector<std::string>& layers,
                          const std::vector<std::string>& path_dirs, const std::string& name);

}  // namespace aishell::runtime
