/* enosys: run a command with some system calls failing with ENOSYS, as on a kernel (or under a
 * container profile) that lacks them; crun's tests do the same. Started as root, it loads a
 * seccomp filter (root needs no no_new_privs for that, so setuid helpers such as newuidmap keep
 * working), drops to UID:GID and execs the command; the filter stays for every descendant.
 *
 *   enosys UID GID SYSCALL[,SYSCALL...] -- CMD [ARG...]
 *
 * Known names: openat2, fsopen, fsconfig, fsmount, move_mount, mount_setattr, close_range, clone3;
 * and TIOCGPTPEER: that ioctl fails with ENOTTY, as on a kernel before 4.13 (tty_ioctl turns
 * the unknown request's ENOIOCTLCMD into ENOTTY).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "add this architecture"
#endif

static const struct { const char *name; int nr; } known[] = {
    {"openat2", SYS_openat2},       {"fsopen", SYS_fsopen},         {"fsconfig", SYS_fsconfig},
    {"fsmount", SYS_fsmount},       {"move_mount", SYS_move_mount}, {"mount_setattr", SYS_mount_setattr},
    {"close_range", SYS_close_range}, {"clone3", SYS_clone3},
};

static int lookup(const char *name) {
    for (size_t i = 0; i < sizeof known / sizeof known[0]; ++i)
        if (strcmp(known[i].name, name) == 0) return known[i].nr;
    fprintf(stderr, "enosys: unknown syscall %s\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: enosys UID GID SYSCALL[,SYSCALL...] -- CMD [ARG...]\n");
        return 2;
    }
    uid_t uid = (uid_t)strtoul(argv[1], NULL, 10);
    gid_t gid = (gid_t)strtoul(argv[2], NULL, 10);
    int nrs[16], n = 0, no_ptpeer = 0;
    for (char *tok = strtok(argv[3], ","); tok && n < 16; tok = strtok(NULL, ","))
        if (strcmp(tok, "TIOCGPTPEER") == 0) no_ptpeer = 1;
        else nrs[n++] = lookup(tok);

    struct sock_filter prog[4 + 2 * 16 + 4 + 1];
    int i = 0;
    prog[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    prog[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0);
    prog[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    prog[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (int k = 0; k < n; ++k) {
        prog[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nrs[k], 0, 1);
        prog[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
    }
    if (no_ptpeer) {  /* ioctl(fd, TIOCGPTPEER, ...): the request is args[1]'s low word */
        prog[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 3);
        prog[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1]));
        prog[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCGPTPEER, 0, 1);
        prog[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOTTY);
    }
    prog[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog fprog = {.len = (unsigned short)i, .filter = prog};

    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) { perror("enosys: seccomp"); return 2; }
    if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) {
        perror("enosys: drop to the user");
        return 2;
    }
    execvp(argv[5], argv + 5);
    perror("enosys: exec");
    return 127;
}
