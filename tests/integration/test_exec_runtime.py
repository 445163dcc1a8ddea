"""aishell exec: the runtime end to end, as the unprivileged user in both userns modes (and as
root where it matters). The busybox fixture image is pushed to a local registry and pulled."""
import os
import signal
import subprocess

import pytest

from helpers import users


HERE = os.path.dirname(os.path.abspath(__file__))
PROBE_SRC = os.path.join(HERE, "..", "fixtures", "exec_probe.c")
DEFAULT_CAPS = "00000000a80425fb"


def run(aishell, image, *cmd, user="unpriv", mode="subuid", opts=(), check=False, **kw):
    env = {"AISHELL_USERNS": mode} if user == "unpriv" else {}
    env.update(kw.pop("env", {}))
    return aishell("exec", "--image", image, *opts, "--", *cmd, user=user, env=env, check=check, **kw)


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_id_is_root_and_keep_id_is_the_caller(aishell, busybox, unpriv_user, mode):
    assert run(aishell, busybox, "id", "-u", mode=mode).stdout.strip() == "0"
    if mode == "single":
        uid = str(__import__("pwd").getpwnam(unpriv_user).pw_uid)
        r = run(aishell, busybox, "sh", "-c", "id -u; echo $HOME", mode=mode, opts=("--userns=keep-id",))
        assert r.stdout.split()[0] == uid, r.stderr


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_bound_dir_files_belong_to_the_caller(aishell, busybox, unpriv_user, mode):
    d = aishell.make_dir(os.path.join(aishell.workdir, "proj"))
    with open(os.path.join(d, "in.txt"), "w") as f:
        f.write("hello\n")
    r = run(aishell, busybox, "sh", "-c", "cat /proj/in.txt; echo new > /proj/out.txt",
            mode=mode, opts=("-v", f"{d}:/proj"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"
    st = os.stat(os.path.join(d, "out.txt"))
    assert st.st_uid == __import__("pwd").getpwnam(unpriv_user).pw_uid


def test_hardening_inside(aishell, busybox):
    r = run(aishell, busybox, "sh", "-c",
            "cat /proc/self/status | grep CapEff; echo fds: $(ls /proc/self/fd);"
            "echo x > /proc/sys/kernel/hostname 2>&1 || echo ro-ok; echo x > /proc/1/exe 2>&1 || echo exe-ok")
    assert r.returncode == 0, r.stderr
    assert f"CapEff:\t{DEFAULT_CAPS}" in r.stdout
    fds = next(l for l in r.stdout.splitlines() if l.startswith("fds:")).split()[1:]
    assert fds[:3] == ["0", "1", "2"] and len(fds) <= 4, fds  # 3 is ls's own directory
    assert "ro-ok" in r.stdout and "exe-ok" in r.stdout


def test_masked_paths_read_empty(aishell, busybox):
    # /proc/kcore exists only with CONFIG_PROC_KCORE: check the masked paths this host has.
    files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
             if os.path.exists(p)]
    assert files, "no maskable /proc file on this host"
    script = "".join(f"echo {p} $(head -c 64 {p} | wc -c);" for p in files)
    script += "echo firmware $(ls -A /sys/firmware | wc -l)"
    r = run(aishell, busybox, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    sizes = dict(l.split() for l in r.stdout.splitlines())
    assert all(sizes[p] == "0" for p in files), sizes
    assert sizes["firmware"] == "0"


def test_no_host_directory_fd_escapes(aishell, busybox, unpriv_user):
    """A host directory that aishell's caller has open (an inherited fd, the working directory)
    is not reachable from the command: not through /proc/self/fd, /proc/1/fd or the cwd. The cwd
    is the project, bound at its own path by design: the secret is in its parent, which the
    host's cwd reaches by `..` and the bound project must not."""
    secret = aishell.make_dir(os.path.join(aishell.workdir, "host-secret"))
    with open(os.path.join(secret, "marker"), "w") as f:
        f.write("HOST-SECRET\n")
    project = aishell.make_dir(os.path.join(secret, "project"))
    users.chown_tree(secret, aishell.entry)
    probe = ("for p in /proc/self/fd/* /proc/1/fd/* /proc/self/cwd /proc/1/cwd .; do "
             "cat $p/marker $p/../marker $p/../host-secret/marker 2>/dev/null; done; echo done")
    fd = os.open(secret, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # The control: the same probe outside a container finds the marker through both.
        control = subprocess.run(users.as_user_prefix(aishell.entry) + ["sh", "-c", probe],
                                 pass_fds=(fd,), cwd=project, capture_output=True, text=True)
        assert "HOST-SECRET" in control.stdout
        p = aishell.popen("exec", "--image", busybox, "--", "sh", "-c", probe, user="unpriv",
                          env={"AISHELL_USERNS": "subuid"}, pass_fds=(fd,), cwd=project)
        out, err = p.communicate(timeout=60)
    finally:
        os.close(fd)
    assert p.returncode == 0, err
    assert out.splitlines()[-1] == "done"
    assert "HOST-SECRET" not in out


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_status_passes_through(aishell, busybox, code):
    assert run(aishell, busybox, "sh", "-c", f"exit {code}").returncode == code


def test_signal_exit_statuses_and_runtime_errors(aishell, busybox):
    assert run(aishell, busybox, "sh", "-c", "kill -INT $$").returncode == 130
    assert run(aishell, busybox, "sh", "-c", "kill -TERM $$").returncode == 143
    r = run(aishell, busybox, "no-such-command")
    assert r.returncode == 127 and "aishell: error: exec no-such-command" in r.stderr
    assert run(aishell, busybox, "/etc/passwd").returncode == 126
    r = run(aishell, busybox, "true", opts=("--cap-add", "CAP_FLY"))
    assert r.returncode == 125 and r.stderr.startswith("aishell: error: unknown capability 'CAP_FLY'")


def test_signal_reaches_the_command_and_zombies_are_reaped(aishell, busybox):
    p = aishell.popen("exec", "--image", busybox, "--", "sh", "-c",
                      "trap 'echo got-term; exit 7' TERM; (sleep 0.1 &) ; sleep 0.5;"
                      "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l; while :; do sleep 0.1; done",
                      user="unpriv", env={"AISHELL_USERNS": "subuid"})
    # The zombie count is printed after the trap is installed: then SIGTERM must reach it.
    zombies = p.stdout.readline()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 7, err
    assert "got-term" in out
    assert zombies.strip() == "0", err  # no zombie left


def test_network_none_has_only_lo(aishell, busybox):
    r = run(aishell, busybox, "ls", "/sys/class/net", opts=("--network", "none"))
    assert r.stdout.split() == ["lo"], r.stderr


def test_subuid_chown(aishell, busybox):
    r = run(aishell, busybox, "sh", "-c", "touch /f && chown 1000:1000 /f && stat -c %u:%g /f")
    assert r.stdout.strip() == "1000:1000", r.stderr


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_seccomp_denies_with_eperm(aishell, busybox, mode, tmp_path):
    bindir = aishell.make_dir(os.path.join(aishell.workdir, "probe"))
    subprocess.run(["cc", "-static", "-o", os.path.join(bindir, "probe"), PROBE_SRC], check=True)
    os.chmod(os.path.join(bindir, "probe"), 0o755)
    r = run(aishell, busybox, "/probe/probe", mode=mode, opts=("-v", f"{bindir}:/probe:ro"))
    verdicts = dict(l.split() for l in r.stdout.splitlines())
    for name in ["mount", "umount", "keyctl", "add_key", "reboot", "kexec_load", "open_by_handle_at",
                 "unshare_user", "vsock", "io_uring_setup"]:
        assert verdicts[name] == "EPERM", (name, r.stdout)
    assert verdicts["clone3"] == "ENOSYS"
    r = run(aishell, busybox, "/probe/probe", mode=mode, opts=("-v", f"{bindir}:/probe:ro",
                                                                  "--security-opt", "seccomp=unconfined"))
    unconfined = dict(l.split() for l in r.stdout.splitlines())
    assert unconfined["unshare_user"] != "EPERM"
    # Unconfined, io_uring is the kernel's to allow (kernel.io_uring_disabled, Linux >= 6.6).
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            io_uring_enabled = f.read().strip() == "0"
    except FileNotFoundError:
        io_uring_enabled = True
    if io_uring_enabled:
        assert unconfined["io_uring_setup"] == "OK", r.stdout


def test_root_runs_too(aishell, busybox):
    # From a store of its own: the test's store belongs to the unprivileged user, and a store
    # another user owns is refused (test_store_permissions.py).
    env = {"AISHELL_STORE": os.path.join(aishell.workdir, "root-store")}
    aishell("pull", busybox, env=env)
    r = run(aishell, busybox, "sh", "-c", "id -u; grep CapEff /proc/self/status", user="root", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "0" and DEFAULT_CAPS in r.stdout


def test_runtime_failures_exit_125_and_unrunnable_commands_126(aishell, busybox):
    r = run(aishell, busybox, "/etc")
    assert r.returncode == 126 and r.stderr.count("aishell: error:") == 1, r.stderr
    r = run(aishell, busybox, "/no/such/file")
    assert r.returncode == 127 and "aishell: error: exec /no/such/file" in r.stderr
    r = run(aishell, busybox, "true", opts=("--network", "bridge"))
    assert r.returncode == 125 and r.stderr.startswith("aishell: error: --network bridge is not supported")
    r = run(aishell, busybox, "true", opts=("-v", "/no/such/dir:/x"))
    assert r.returncode == 125 and r.stderr.count("aishell: error:") == 1
    # The store's layers are owned for subuid mode now: single mode is refused, not mixed in.
    assert run(aishell, busybox, "true").returncode == 0
    r = run(aishell, busybox, "true", mode="single")
    assert r.returncode == 125 and "owned for id mapping" in r.stderr
    assert r.stderr.count("aishell: error:") == 1


def test_missing_image_is_pulled_first(aishell, registry, rt_images):
    reg = registry("http")
    rt_images.push(rt_images.busybox, reg, "team/tool:1")
    name = f"{reg.host}/team/tool:1"
    r = run(aishell, name, "cat", "/etc/passwd")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("root:x:0:0:")
    assert "Pulled" in r.stderr or "Pulling" in r.stderr
    reg.stop()  # now in the store: no registry needed
    r = run(aishell, name, "true")
    assert r.returncode == 0, r.stderr
    assert "Pulling" not in r.stderr
    r = run(aishell, f"{reg.host}/team/absent:1", "true")
    assert r.returncode == 125 and r.stderr.count("aishell: error:") == 1, r.stderr
