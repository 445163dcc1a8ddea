// libarchive is loaded on first use (archive_api.cpp). Code that is about to chroot or
// pivot_root and then use libarchive must load it first, while the host's /usr/lib is visible.
#pragma once

#include <locale.h>

struct archive;  // libarchive's handle

namespace aishell::oci {

void load_libarchive();  // throws Error naming the library and its package when it is missing

// A reader's formats and filters for a tar from the Docker world (ADD's archives, docker save
// and podman save files): ustar, pax and GNU tar, plain or compressed with one of the four
// compressions Docker's pkg/archive DecompressStream knows: gzip, bzip2, xz, zstd. Not
// filter_all: it would also unwrap uuencode, lzip, lz4, ... that Docker copies as they are, and
// some of its filters exec external programs.
void support_docker_tar(archive* a);

// The calling thread's LC_CTYPE, set for a scope (uselocale(3)) and restored after it.
// libarchive converts names and link targets between the thread's charset and the tar's (UTF-8
// in pax records, archive_string.c), so what it writes and reads depends on that locale; these
// pin it, whatever the process's locale or the user's LANG:
//  - writing a layer: C.UTF-8, so a name that is valid UTF-8 goes into its pax `path` /
//    `linkpath` record byte for byte, as Go's archive/tar writes it (no conversion, no Unicode
//    normalization), and any other name fails the conversion and is written as its raw bytes
//    under `hdrcharset=BINARY` (POSIX.1-2008 pax; what Python's tarfile does too). Under the C
//    locale every non-ASCII name would take the BINARY form. Where C.UTF-8 does not exist
//    (glibc < 2.35 without the locale installed) the C locale is used: the same bytes, with a
//    hdrcharset record on every non-ASCII entry.
//  - reading a tar: C, where libarchive keeps the bytes of a name it cannot convert to ASCII;
//    under a UTF-8 locale it would normalize names to NFC (a decomposed "e\u0301" coming back
//    as "\u00e9": another file name).
class ScopedCtype {
public:
    enum class Kind { Posix, Utf8 };
    explicit ScopedCtype(Kind kind);
    ~ScopedCtype();
    ScopedCtype(const ScopedCtype&) = delete;
    ScopedCtype& operator=(const ScopedCtype&) = delete;

private:
    locale_t locale_ = nullptr;
    locale_t previous_ = nullptr;
};

}  // namespace aishell::oci
