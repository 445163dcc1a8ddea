// libarchive is loaded on first use (archive_api.cpp). Code that is about to chroot or
// pivot_root and then use libarchive must load it first, while the host's /usr/lib is visible.
#pragma once

namespace aishell::oci {

void load_libarchive();  // throws Error naming the library and its package when it is missing

}  // namespace aishell::oci
