// ADD's tar extraction, for copy_files (build_copy.cpp): a tar recognised by its content, its
// members unpacked beneath the destination as Docker's chrootarchive.Untar writes them.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "composer/build_copy.hpp"

namespace aishell::composer {

// Whether ADD extracts the regular file open on fd (a first tar header parses, plain or gzip,
// bzip2, xz, zstd); the fd is rewound whatever the answer. rel names it in errors.
bool is_tar_archive(int fd, const std::string& rel);

// Unpacks the tar open on fd beneath dest (resolved in its root already); what names it in
// errors; chown, when given, is every member's owner; owners records what the disk cannot keep.
void extract_tar(int fd, const std::string& dest, const std::string& what, std::optional<CopyOwner> chown,
                 OwnerRecorder* owners);

// "a//b/c/" -> {"a", "b", "c"}: the non-empty components of a path (build_copy.cpp).
std::vector<std::string> split_path(const std::string& rel);

}  // namespace aishell::composer
