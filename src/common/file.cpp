#include "common/file.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "common/error.hpp"

namespace aishell {

UniqueFd open_file(const fs::path& path, int flags, mode_t mode) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd < 0) throw_errno("open", path.string());
    return UniqueFd(fd);
}

std::optional<std::string> read_file_if_exists(const fs::path& path, std::uint64_t max_size) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return std::nullopt;
        throw_errno("open", path.string());
    }
    UniqueFd owner(fd);
    struct stat st {};
    if (::fstat(fd, &st) < 0) throw_errno("stat", path.string());
    if (static_cast<std::uint64_t>(st.st_size) > max_size)
        throw Error(path.string() + ": file is " + std::to_string(st.st_size) +
                    " bytes, larger than the limit of " + std::to_string(max_size));
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("read", path.string());
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > max_size)
            throw Error(path.string() + ": file is larger than the limit of " +
                        std::to_string(max_size) + " bytes");
    }
    return out;
}

std::string read_file(const fs::path& path, std::uint64_t max_size) {
    auto content = read_file_if_exists(path, max_size);
    if (!content) throw SystemError(ENOENT, "open", path.string());
    return std::move(*content);
}

void write_all(int fd, std::string_view data, std::string_view what) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("write", what);
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

void fsync_fd(int fd, std::string_view what) {
    if (::fsync(fd) < 0) throw_errno("fsync", what);
}

void fsync_dir(const fs::path& dir) {
    UniqueFd fd = open_file(dir, O_RDONLY | O_DIRECTORY);
    fsync_fd(fd.get(), dir.string());
}

void write_file_atomic(const fs::path& path, std::string_view data, mode_t mode) {
    fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
    TempFile tmp(dir, "." + path.filename().string() + ".tmp", mode);
    write_all(tmp.fd(), data, tmp.path().string());
    tmp.commit(path);
}

void make_dirs(const fs::path& path, mode_t mode) {
    if (path.empty()) return;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) throw SystemError(ENOTDIR, "mkdir", path.string());
        return;
    }
    if (path.has_parent_path() && path.parent_path() != path) make_dirs(path.parent_path(), mode);
    if (::mkdir(path.c_str(), mode) < 0 && errno != EEXIST) throw_errno("mkdir", path.string());
}

TempFile::TempFile(const fs::path& dir, std::string_view prefix, mode_t mode) {
    for (int attempt = 0; attempt < 16; ++attempt) {
        fs::path candidate = dir / (std::string(prefix) + "." + random_hex(12));
        int fd = ::open(candidate.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd >= 0) {
            fd_.reset(fd);
            path_ = std::move(candidate);
            owned_ = true;
            return;
        }
        if (errno != EEXIST) throw_errno("create temp file", candidate.string());
    }
    throw Error("create temp file in " + dir.string() + ": too many collisions");
}

TempFile::TempFile(TempFile&& other) noexcept
    : fd_(std::move(other.fd_)), path_(std::move(other.path_)), owned_(std::exchange(other.owned_, false)) {}

TempFile& TempFile::operator=(TempFile&& other) noexcept {
    if (this != &other) {
        if (owned_) ::unlink(path_.c_str());
        fd_ = std::move(other.fd_);
        path_ = std::move(other.path_);
        owned_ = std::exchange(other.owned_, false);
    }
    return *this;
}

TempFile::~TempFile() {
    if (owned_) ::unlink(path_.c_str());
}

void TempFile::commit(const fs::path& target) {
    fsync_fd(fd_.get(), path_.string());
    int fd = fd_.release();
    if (::close(fd) < 0) throw_errno("close", path_.string());
    if (::rename(path_.c_str(), target.c_str()) < 0) throw_errno("rename " + path_.string() + " to", target.string());
    owned_ = false;
    fsync_dir(target.has_parent_path() ? target.parent_path() : fs::path("."));
}

void TempFile::replace(const fs::path& target) {
    int fd = fd_.release();
    if (::close(fd) < 0) throw_errno("close", path_.string());
    if (::rename(path_.c_str(), target.c_str()) < 0) throw_errno("rename " + path_.string() + " to", target.string());
    owned_ = false;
}

void TempFile::keep() noexcept {
    owned_ = false;
}

std::string random_hex(std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(n);
    unsigned char buf[64];
    while (out.size() < n) {
        ssize_t got = ::getrandom(buf, sizeof buf, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            throw_errno("getrandom");
        }
        for (ssize_t i = 0; i < got && out.size() < n; ++i) out += digits[buf[i] & 0xf];
    }
    return out;
}

std::optional<std::string> get_env(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') return std::nullopt;
    return std::string(value);
}

fs::path home_dir() {
    if (auto home = get_env("HOME")) return *home;
    struct passwd* pw = ::getpwuid(::getuid());  // NOLINT(concurrency-mt-unsafe): called on the main thread
    if (pw != nullptr && pw->pw_dir != nullptr) return pw->pw_dir;
    throw Error("cannot find the home directory", "set HOME");
}

}  // namespace aishell
