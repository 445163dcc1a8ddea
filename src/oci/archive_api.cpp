// libarchive, loaded on first use (see common/shared_library.hpp for why): this file defines
// the libarchive functions aishell calls as forwarders to the real library, which it dlopens
// the first time any of them runs. Call sites include <archive.h> and call libarchive as usual;
// the executable is not linked against libarchive (nor, through it, libxml2 and ICU).
//
// Using a libarchive function that is not listed here fails at link time with an undefined
// reference: add it to AISHELL_ARCHIVE_FUNCTIONS and give it a forwarder below (its
// signature exactly as archive.h / archive_entry.h declare it).
#include <archive.h>
#include <archive_entry.h>
#include <stdarg.h>
#include <stdio.h>

#include "common/shared_library.hpp"
#include "oci/archive_api.hpp"

#define AISHELL_ARCHIVE_FUNCTIONS(X) \
    X(archive_entry_atime) \
    X(archive_entry_atime_is_set) \
    X(archive_entry_atime_nsec) \
    X(archive_entry_filetype) \
    X(archive_entry_free) \
    X(archive_entry_gid) \
    X(archive_entry_gname) \
    X(archive_entry_hardlink) \
    X(archive_entry_mode) \
    X(archive_entry_mtime) \
    X(archive_entry_mtime_nsec) \
    X(archive_entry_new) \
    X(archive_entry_pathname) \
    X(archive_entry_perm) \
    X(archive_entry_rdevmajor) \
    X(archive_entry_rdevminor) \
    X(archive_entry_set_filetype) \
    X(archive_entry_set_gid) \
    X(archive_entry_set_hardlink) \
    X(archive_entry_set_mode) \
    X(archive_entry_set_mtime) \
    X(archive_entry_set_pathname) \
    X(archive_entry_set_perm) \
    X(archive_entry_set_rdev) \
    X(archive_entry_set_size) \
    X(archive_entry_set_symlink) \
    X(archive_entry_set_uid) \
    X(archive_entry_size) \
    X(archive_entry_symlink) \
    X(archive_entry_uid) \
    X(archive_entry_uname) \
    X(archive_entry_xattr_add_entry) \
    X(archive_entry_xattr_next) \
    X(archive_entry_xattr_reset) \
    X(archive_error_string) \
    X(archive_read_data_block) \
    X(archive_read_free) \
    X(archive_read_new) \
    X(archive_read_next_header) \
    X(archive_read_open) \
    X(archive_read_open_fd) \
    X(archive_read_open_memory) \
    X(archive_read_support_filter_all) \
    X(archive_read_support_filter_bzip2) \
    X(archive_read_support_filter_gzip) \
    X(archive_read_support_filter_xz) \
    X(archive_read_support_filter_zstd) \
    X(archive_read_support_format_empty) \
    X(archive_read_support_format_gnutar) \
    X(archive_read_support_format_raw) \
    X(archive_read_support_format_tar) \
    X(archive_set_error) \
    X(archive_write_close) \
    X(archive_write_data) \
    X(archive_write_data_block) \
    X(archive_write_disk_new) \
    X(archive_write_disk_set_options) \
    X(archive_write_disk_set_standard_lookup) \
    X(archive_write_finish_entry) \
    X(archive_write_free) \
    X(archive_write_header) \
    X(archive_write_new) \
    X(archive_write_open2) \
    X(archive_write_set_bytes_in_last_block) \
    X(archive_write_set_bytes_per_block) \
    X(archive_write_set_format_pax_restricted) \
    /* end */

namespace {

struct ArchiveApi {
#define AISHELL_ARCHIVE_SLOT(name) decltype(&::name) name = nullptr;
    AISHELL_ARCHIVE_FUNCTIONS(AISHELL_ARCHIVE_SLOT)
#undef AISHELL_ARCHIVE_SLOT

    explicit ArchiveApi(const aishell::SharedLibrary& lib) {
#define AISHELL_ARCHIVE_BIND(name) lib.bind(this->name, #name);
        AISHELL_ARCHIVE_FUNCTIONS(AISHELL_ARCHIVE_BIND)
#undef AISHELL_ARCHIVE_BIND
    }
};

// Loaded once per process, on first use; immutable afterwards (thread-safe static init).
const ArchiveApi& api() {
    static const aishell::SharedLibrary lib("libarchive.so.13", "libarchive13");
    static const ArchiveApi table(lib);
    return table;
}

}  // namespace

namespace aishell::oci {

void load_libarchive() { (void)api(); }

void support_docker_tar(archive* a) {
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_filter_zstd(a);
}

ScopedCtype::ScopedCtype(Kind kind) {
    if (kind == Kind::Utf8) locale_ = ::newlocale(LC_CTYPE_MASK, "C.UTF-8", locale_t{});
    if (!locale_) locale_ = ::newlocale(LC_CTYPE_MASK, "C", locale_t{});  // built in: cannot fail but for ENOMEM
    if (locale_) previous_ = ::uselocale(locale_);
}

ScopedCtype::~ScopedCtype() {
    if (!locale_) return;
    ::uselocale(previous_);
    ::freelocale(locale_);
}

}  // namespace aishell::oci

extern "C" {

// Variadic: formatted here, handed on as a plain string.
void archive_set_error(struct archive* a, int error, const char* fmt, ...) {
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    api().archive_set_error(a, error, "%s", message);
}

time_t archive_entry_atime(struct archive_entry * a0) { return api().archive_entry_atime(a0); }
int archive_entry_atime_is_set(struct archive_entry * a0) { return api().archive_entry_atime_is_set(a0); }
long archive_entry_atime_nsec(struct archive_entry * a0) { return api().archive_entry_atime_nsec(a0); }
__LA_MODE_T archive_entry_filetype(struct archive_entry * a0) { return api().archive_entry_filetype(a0); }
void archive_entry_free(struct archive_entry * a0) { api().archive_entry_free(a0); }
la_int64_t archive_entry_gid(struct archive_entry * a0) { return api().archive_entry_gid(a0); }
const char * archive_entry_gname(struct archive_entry * a0) { return api().archive_entry_gname(a0); }
const char * archive_entry_hardlink(struct archive_entry * a0) { return api().archive_entry_hardlink(a0); }
__LA_MODE_T archive_entry_mode(struct archive_entry * a0) { return api().archive_entry_mode(a0); }
time_t archive_entry_mtime(struct archive_entry * a0) { return api().archive_entry_mtime(a0); }
long archive_entry_mtime_nsec(struct archive_entry * a0) { return api().archive_entry_mtime_nsec(a0); }
struct archive_entry * archive_entry_new() { return api().archive_entry_new(); }
const char * archive_entry_pathname(struct archive_entry * a0) { return api().archive_entry_pathname(a0); }
__LA_MODE_T archive_entry_perm(struct archive_entry * a0) { return api().archive_entry_perm(a0); }
dev_t archive_entry_rdevmajor(struct archive_entry * a0) { return api().archive_entry_rdevmajor(a0); }
dev_t archive_entry_rdevminor(struct archive_entry * a0) { return api().archive_entry_rdevminor(a0); }
void archive_entry_set_filetype(struct archive_entry * a0, unsigned int a1) { api().archive_entry_set_filetype(a0, a1); }
void archive_entry_set_gid(struct archive_entry * a0, la_int64_t a1) { api().archive_entry_set_gid(a0, a1); }
void archive_entry_set_hardlink(struct archive_entry * a0, const char * a1) { api().archive_entry_set_hardlink(a0, a1); }
void archive_entry_set_mode(struct archive_entry * a0, __LA_MODE_T a1) { api().archive_entry_set_mode(a0, a1); }
void archive_entry_set_mtime(struct archive_entry * a0, time_t a1, long a2) { api().archive_entry_set_mtime(a0, a1, a2); }
void archive_entry_set_pathname(struct archive_entry * a0, const char * a1) { api().archive_entry_set_pathname(a0, a1); }
void archive_entry_set_perm(struct archive_entry * a0, __LA_MODE_T a1) { api().archive_entry_set_perm(a0, a1); }
void archive_entry_set_rdev(struct archive_entry * a0, dev_t a1) { api().archive_entry_set_rdev(a0, a1); }
void archive_entry_set_size(struct archive_entry * a0, la_int64_t a1) { api().archive_entry_set_size(a0, a1); }
void archive_entry_set_symlink(struct archive_entry * a0, const char * a1) { api().archive_entry_set_symlink(a0, a1); }
void archive_entry_set_uid(struct archive_entry * a0, la_int64_t a1) { api().archive_entry_set_uid(a0, a1); }
la_int64_t archive_entry_size(struct archive_entry * a0) { return api().archive_entry_size(a0); }
const char * archive_entry_symlink(struct archive_entry * a0) { return api().archive_entry_symlink(a0); }
la_int64_t archive_entry_uid(struct archive_entry * a0) { return api().archive_entry_uid(a0); }
const char * archive_entry_uname(struct archive_entry * a0) { return api().archive_entry_uname(a0); }
void archive_entry_xattr_add_entry(struct archive_entry * a0, const char * a1, const void * a2, size_t a3) { api().archive_entry_xattr_add_entry(a0, a1, a2, a3); }
int archive_entry_xattr_next(struct archive_entry * a0, const char ** a1, const void ** a2, size_t * a3) { return api().archive_entry_xattr_next(a0, a1, a2, a3); }
int archive_entry_xattr_reset(struct archive_entry * a0) { return api().archive_entry_xattr_reset(a0); }
const char * archive_error_string(struct archive * a0) { return api().archive_error_string(a0); }
int archive_read_data_block(struct archive * a0, const void ** a1, size_t * a2, la_int64_t * a3) { return api().archive_read_data_block(a0, a1, a2, a3); }
int archive_read_free(struct archive * a0) { return api().archive_read_free(a0); }
struct archive * archive_read_new() { return api().archive_read_new(); }
int archive_read_next_header(struct archive * a0, struct archive_entry ** a1) { return api().archive_read_next_header(a0, a1); }
int archive_read_open(struct archive * a0, void * a1, archive_open_callback * a2, archive_read_callback * a3, archive_close_callback * a4) { return api().archive_read_open(a0, a1, a2, a3, a4); }
int archive_read_open_fd(struct archive * a0, int a1, size_t a2) { return api().archive_read_open_fd(a0, a1, a2); }
int archive_read_open_memory(struct archive * a0, const void * a1, size_t a2) { return api().archive_read_open_memory(a0, a1, a2); }
int archive_read_support_filter_all(struct archive * a0) { return api().archive_read_support_filter_all(a0); }
int archive_read_support_filter_bzip2(struct archive * a0) { return api().archive_read_support_filter_bzip2(a0); }
int archive_read_support_filter_gzip(struct archive * a0) { return api().archive_read_support_filter_gzip(a0); }
int archive_read_support_filter_xz(struct archive * a0) { return api().archive_read_support_filter_xz(a0); }
int archive_read_support_filter_zstd(struct archive * a0) { return api().archive_read_support_filter_zstd(a0); }
int archive_read_support_format_empty(struct archive * a0) { return api().archive_read_support_format_empty(a0); }
int archive_read_support_format_gnutar(struct archive * a0) { return api().archive_read_support_format_gnutar(a0); }
int archive_read_support_format_raw(struct archive * a0) { return api().archive_read_support_format_raw(a0); }
int archive_read_support_format_tar(struct archive * a0) { return api().archive_read_support_format_tar(a0); }
int archive_write_close(struct archive * a0) { return api().archive_write_close(a0); }
la_ssize_t archive_write_data(struct archive * a0, const void * a1, size_t a2) { return api().archive_write_data(a0, a1, a2); }
la_ssize_t archive_write_data_block(struct archive * a0, const void * a1, size_t a2, la_int64_t a3) { return api().archive_write_data_block(a0, a1, a2, a3); }
struct archive * archive_write_disk_new() { return api().archive_write_disk_new(); }
int archive_write_disk_set_options(struct archive * a0, int a1) { return api().archive_write_disk_set_options(a0, a1); }
int archive_write_disk_set_standard_lookup(struct archive * a0) { return api().archive_write_disk_set_standard_lookup(a0); }
int archive_write_finish_entry(struct archive * a0) { return api().archive_write_finish_entry(a0); }
int archive_write_free(struct archive * a0) { return api().archive_write_free(a0); }
int archive_write_header(struct archive * a0, struct archive_entry * a1) { return api().archive_write_header(a0, a1); }
struct archive * archive_write_new() { return api().archive_write_new(); }
int archive_write_open2(struct archive * a0, void * a1, archive_open_callback * a2, archive_write_callback * a3, archive_close_callback * a4, archive_free_callback * a5) { return api().archive_write_open2(a0, a1, a2, a3, a4, a5); }
int archive_write_set_bytes_in_last_block(struct archive * a0, int a1) { return api().archive_write_set_bytes_in_last_block(a0, a1); }
int archive_write_set_bytes_per_block(struct archive * a0, int a1) { return api().archive_write_set_bytes_per_block(a0, a1); }
int archive_write_set_format_pax_restricted(struct archive * a0) { return api().archive_write_set_format_pax_restricted(a0); }

}  // extern "C"
