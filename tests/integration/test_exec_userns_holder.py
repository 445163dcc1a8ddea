"""aishell exec in subuid mode joins one long-lived user namespace per store and mapping (the
holder, runtime/userns_holder.hpp) instead of making one, with newuidmap/newgidmap, per run.
What is checked: runs share the namespace and its mapping; a dead holder or a record naming
some other process of the user is never joined but replaced; removing the record (or the whole
store) ends the holder; keep-id has its own. All as the unprivileged user."""
import glob
import os
import pwd
import signal
import subprocess
import time




def run(aishell, busybox, *cmd, opts=()):
    r = aishell("exec", "--image", busybox, *opts, "--", *cmd, user="unpriv",
                env={"AISHELL_USERNS": "subuid"}, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def records(aishell):
    return sorted(glob.glob(os.path.join(aishell.store, "tmp", "userns-*.holder")))


def holder_pid(record):
    with open(record) as f:
        return int(f.read().split()[0])


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if comm(pid) != "aishell-userns":
            return True
        time.sleep(0.05)
    return False


def processes_with_environ(marker):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def subuid_map(unpriv_user):
    pw = pwd.getpwnam(unpriv_user)
    with open("/etc/subuid") as f:
        start, count = next(line.strip().split(":")[1:] for line in f if line.startswith(unpriv_user + ":"))
    return [[0, pw.pw_uid, 1], [1, int(start), int(count)]]


def test_runs_share_one_namespace_with_the_subuid_mapping(aishell, busybox, unpriv_user):
    first = run(aishell, busybox, "sh", "-c", "readlink /proc/self/ns/user; cat /proc/self/uid_map")
    second = run(aishell, busybox, "readlink", "/proc/self/ns/user")
    ns, *maps = first.splitlines()
    assert second.strip() == ns
    assert [[int(x) for x in line.split()] for line in maps] == subuid_map(unpriv_user)
    [record] = records(aishell)
    pid = holder_pid(record)
    assert comm(pid) == "aishell-userns"
    assert os.readlink(f"/proc/{pid}/ns/user") == ns
    st = os.stat(f"/proc/{pid}")
    assert st.st_uid == pwd.getpwnam(unpriv_user).pw_uid
    # Detached: own session, cwd /, nothing of the store open but its own record.
    assert os.getsid(pid) == pid
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
    assert fds[:3] == [0, 1, 2] and held[:3] == ["/dev/null"] * 3
    assert [p for p in held if p.startswith(aishell.store)] == [record]
    # Nothing of the caller's environment (AISHELL_STORE, HOME, ...) lives on in it.
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert f.read() == b""


def test_a_killed_holder_is_replaced(aishell, busybox):
    run(aishell, busybox, "true")  # starts the holder
    [record] = records(aishell)
    old = holder_pid(record)
    os.kill(old, signal.SIGKILL)
    assert gone(old)
    after = run(aishell, busybox, "readlink", "/proc/self/ns/user")
    new = holder_pid(record)
    assert new != old and comm(new) == "aishell-userns"
    # The run joined the new holder's namespace. (Comparing with `before` proves nothing: once
    # the killed holder is reaped its namespace is freed and the kernel may give the new one
    # the same inode number.)
    assert after.strip() == os.readlink(f"/proc/{new}/ns/user")


def test_a_record_naming_another_process_is_not_joined(aishell, busybox, unpriv_user):
    run(aishell, busybox, "true")
    [record] = records(aishell)
    holder = holder_pid(record)
    os.kill(holder, signal.SIGKILL)
    assert gone(holder)
    # Some other process of the same user, in a user namespace of its own (one id mapped).
    impostor = subprocess.Popen(["setpriv", f"--reuid={unpriv_user}", f"--regid={unpriv_user}", "--clear-groups",
                                 "unshare", "--user", "--map-root-user", "sleep", "60"])
    try:
        sleeper = impostor.pid  # setpriv and unshare exec in turn: one process
        deadline = time.monotonic() + 10
        while comm(sleeper) != "sleep" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert comm(sleeper) == "sleep"
        with open(f"/proc/{sleeper}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
        with open(record, "w") as f:
            f.write(f"{sleeper} {start}\n")
        out = run(aishell, busybox, "sh", "-c", "readlink /proc/self/ns/user; cat /proc/self/uid_map")
        ns, *maps = out.splitlines()
        assert ns != os.readlink(f"/proc/{sleeper}/ns/user")
        assert [[int(x) for x in line.split()] for line in maps] == subuid_map(unpriv_user)
        assert holder_pid(record) != sleeper  # replaced by a real holder
        assert comm(holder_pid(record)) == "aishell-userns"
        assert impostor.poll() is None  # and the impostor was left alone
    finally:
        impostor.kill()
        impostor.wait()


def test_removing_the_store_ends_the_holder(aishell, busybox):
    run(aishell, busybox, "true")
    [record] = records(aishell)
    pid = holder_pid(record)
    os.unlink(record)
    assert gone(pid)
    run(aishell, busybox, "true")  # a new one comes up
    [record] = records(aishell)
    pid = holder_pid(record)
    run(aishell, busybox, "true")  # its run dir's reaper may still be at work below
    subprocess.run(["rm", "-rf", aishell.store], check=True)
    assert gone(pid)
    # Nothing of those runs stays behind, stuck on a store that is no more (a reaper whose
    # removal failed once waited forever on a helper that could not start).
    marker = f"AISHELL_STORE={aishell.store}\0".encode()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and processes_with_environ(marker):
        time.sleep(0.05)
    assert not processes_with_environ(marker)


def test_keep_id_has_a_holder_of_its_own(aishell, busybox, unpriv_user):
    default_ns = run(aishell, busybox, "readlink", "/proc/self/ns/user")
    out = run(aishell, busybox, "sh", "-c", "id -u; readlink /proc/self/ns/user", opts=("--userns=keep-id",))
    uid, keep_ns = out.split()
    assert int(uid) == pwd.getpwnam(unpriv_user).pw_uid
    assert keep_ns != default_ns.strip()
    assert len(records(aishell)) == 2
    again = run(aishell, busybox, "sh", "-c", "readlink /proc/self/ns/user", opts=("--userns=keep-id",))
    assert again.strip() == keep_ns
