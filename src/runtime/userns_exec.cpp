// run_in_userns and remove_tree (see userns_exec.hpp).
#include "runtime/userns_exec.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "runtime/helpers.hpp"
#include "runtime/raw_ids.hpp"

extern char** environ;

namespace aishell::runtime {

namespace {

// The child: wait for the maps, become root of the namespace, exec. C-like (after clone).
[[noreturn]] void helper_child(int sync_fd, int parent_end, bool root_mapped, int keep_fd, char* const* argv,
                               char* const* envp) noexcept {
    // Our copy of the parent's end: with it open, a parent that gives up would never be seen
    // (no EOF) and this child would wait forever.
    ::close(parent_end);
    char go = 0;
    ssize_t n;
    do n = ::read(sync_fd, &go, 1); while (n < 0 && errno == EINTR);
    if (n != 1) ::_exit(125);
    if (root_mapped && (raw_setresgid(0, 0, 0) != 0 || raw_setresuid(0, 0, 0) != 0)) ::_exit(125);
    if (keep_fd >= 0 && ::fcntl(keep_fd, F_SETFD, 0) != 0) ::_exit(125);
    ::execve("/proc/self/exe", argv, envp);
    ::_exit(125);
}

void make_removable(const std::filesystem::path& dir) {
    // Mode 000 dirs (overlay's work/work, images' read-only dirs) block removal even by owner.
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, std::filesystem::directory_options::skip_permission_denied, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
    }
}

}  // namespace

UsernsHelper::~UsernsHelper() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {}
}

int UsernsHelper::wait() {
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0)
        if (errno != EINTR) throw_errno("waitpid");
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int run_in_userns(const IdMapping& mapping, const HelperEntry& helper, const std::vector<std::string>& args) {
    return spawn_in_userns(mapping, helper, args).wait();
}

UsernsHelper spawn_in_userns(const IdMapping& mapping, const HelperEntry& helper, const std::vector<std::string>& args,
                             const HelperOptions& options) {
    std::vector<std::string> full{"aishell", std::string(helper.name)};
    full.insert(full.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : full) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
    UniqueFd rd(fds[0]), wr(fds[1]);
    bool root_mapped = options.become_root && mapping.uid_mapped_inside(0) && mapping.gid_mapped_inside(0);
    char* no_environment[] = {nullptr};
    char* const* envp = options.inherit_environment ? environ : no_environment;
    pid_t pid = static_cast<pid_t>(::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
    if (pid < 0) throw_errno("clone", "user namespace");
    if (pid == 0) helper_child(rd.get(), wr.get(), root_mapped, options.keep_fd, argv.data(), envp);
    rd.reset();
    UsernsHelper started(pid);
    try {
        write_id_maps(pid, mapping);
    } catch (...) {
        wr.reset();  // the child sees EOF and exits 125
        started.wait();
        throw;
    }
    if (::write(wr.get(), "g", 1) != 1) throw_errno("release helper");
    return started;
}

int remove_tree_here(const std::string& dir) noexcept {
    try {
        make_removable(dir);
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
        // Gone is gone, whoever removed it (the whole store may have been deleted meanwhile).
        return ec && std::filesystem::symlink_status(dir, ec).type() != std::filesystem::file_type::not_found ? 1 : 0;
    } catch (...) {
        return 1;
    }
}

int remove_tree_main(const std::vector<std::string>& args) {
    if (args.size() != 1) throw Error(std::string(kRemoveTree.name) + ": expected one directory", kHelperHint);
    return remove_tree_here(args[0]);
}

void remove_tree(const IdMapping& mapping, const std::string& dir) {
    if (remove_tree_here(dir) == 0) return;
    if (run_in_userns(mapping, kRemoveTree, {dir}) != 0)
        throw Error("remove " + dir + ": some files could not be removed", "remove them with `aishell " + std::string(kRemoveTree.name) + " " + dir + "` or as root");
}

}  // namespace aishell::runtime
