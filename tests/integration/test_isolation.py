"""What the container must not get from the host or gain on its own: capabilities through
inheritable file capabilities (CVE-2022-24769's pattern), io_uring, which the default seccomp
profile denies as Docker >= 25 does, and aishell's own command line as PID 1's."""
import os
import subprocess

import pytest

from helpers.build import build, make_context

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE_SRC = os.path.join(HERE, "..", "fixtures", "exec_probe.c")
CAP_DAC_OVERRIDE = 1


# ---- inheritable capabilities -----------------------------------------------------------------

def filecaps_image(aishell, registry, rt_images, user, store):
    reg = registry("http")
    rt_images.push(rt_images.filecaps, reg, "filecaps:1")
    name = f"{reg.host}/filecaps:1"
    aishell("pull", name, user=user, env={"AISHELL_STORE": store})
    return name


def assert_layer_has_file_caps(store):
    """The unpacked layer really carries the file capability (v3 in a user namespace: the same
    bytes plus the namespace's root id), so what a run does with it is the runtime's doing."""
    found = []
    for root, _, files in os.walk(os.path.join(store, "layers")):
        if root.endswith("/opt/caps") and "cat" in files:
            found.append(os.getxattr(os.path.join(root, "cat"), "security.capability"))
    assert found, "no layer tree holds /opt/caps/cat"
    inheritable = int.from_bytes(found[0][8:12], "little")
    assert inheritable == 1 << CAP_DAC_OVERRIDE, found[0]


@pytest.mark.parametrize("user", ["unpriv", "root"])
def test_inheritable_file_caps_give_a_non_root_user_nothing(aishell, registry, rt_images, user):
    store = os.path.join(aishell.workdir, f"store-{user}")
    image = filecaps_image(aishell, registry, rt_images, user, store)
    env = {"AISHELL_STORE": store}
    if user == "unpriv":
        env["AISHELL_USERNS"] = "subuid"
    r = aishell("exec", "--image", image, "--user", "65534:65534", "--",
                "sh", "-c", "grep -E '^Cap(Inh|Amb)' /proc/self/status; /opt/caps/cat /etc/shadow",
                user=user, env=env, check=False)
    assert_layer_has_file_caps(store)
    assert "not-for-nobody" not in r.stdout, "a non-root user read /etc/shadow through file caps"
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stdout + r.stderr
    status = dict(line.split(":\t") for line in r.stdout.splitlines())
    assert status == {"CapInh": "0000000000000000", "CapAmb": "0000000000000000"}, r.stdout
    # Root's own set is untouched: it reads the file with or without the caps.
    r = aishell("exec", "--image", image, "--", "/opt/caps/cat", "/etc/shadow", user=user, env=env)
    assert "not-for-nobody" in r.stdout


# ---- io_uring ---------------------------------------------------------------------------------

@pytest.fixture
def probe(aishell):
    bindir = aishell.make_dir(os.path.join(aishell.workdir, "probe"))
    path = os.path.join(bindir, "probe")
    subprocess.run(["cc", "-static", "-o", path, PROBE_SRC], check=True)
    os.chmod(path, 0o755)
    with open(path, "rb") as f:
        return f.read()


def verdicts(stdout):
    return dict(line.split() for line in stdout.splitlines())


def test_build_run_gets_eperm_from_io_uring(aishell, reg, probe):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {reg.host}/busybox:latest\n"
                                               "COPY --chmod=0755 probe /probe\n"
                                               "RUN /probe > /verdicts\n",
                                 "probe": probe})
    build(aishell, ctx, "-t", "uring")
    r = aishell("exec", "--image", "uring", "--", "cat", "/verdicts", user="unpriv",
                env={"AISHELL_USERNS": "subuid"})
    assert verdicts(r.stdout)["io_uring_setup"] == "EPERM", r.stdout


# ---- PID 1's command line ---------------------------------------------------------------------

def pid1_report():
    """A shell command printing PID 1's cmdline, environ (or its error) and comm, separated."""
    return ("cat /proc/1/cmdline; echo; echo ---; cat /proc/1/environ 2>&1; echo; echo ---; "
            "cat /proc/1/comm")


def parse_pid1_report(stdout):
    cmdline, environ, comm = stdout.split("\n---\n")
    return cmdline.rstrip("\n"), environ, comm.strip()


def assert_pid1_hides(report, *secrets):
    cmdline, environ, comm = report
    # Exactly the fixed name (trailing NULs only where PR_SET_MM_MAP is unavailable).
    assert cmdline.rstrip("\0") == "aishell-init", repr(cmdline)
    assert comm == "aishell", comm
    for secret in secrets:
        assert secret not in environ, environ
    assert "=" not in environ.replace("Permission denied", ""), repr(environ)


def test_pid1_shows_a_fixed_name_not_the_host_command_line(aishell, busybox):
    secret = "env-s3cret-value"
    r = aishell("exec", "-e", f"TOKEN={secret}", "--image", busybox, "--",
                "sh", "-c", pid1_report(), user="unpriv", env={"AISHELL_USERNS": "subuid"})
    assert secret not in r.stdout, r.stdout
    assert_pid1_hides(parse_pid1_report(r.stdout), secret)
    # The command itself still gets its variable.
    r = aishell("exec", "-e", f"TOKEN={secret}", "--image", busybox, "--", "sh", "-c", "echo $TOKEN",
                user="unpriv", env={"AISHELL_USERNS": "subuid"})
    assert r.stdout.strip() == secret


def test_build_run_pid1_shows_no_build_arg(aishell, reg):
    secret = "build-s3cret-value"
    base = f"{reg.host}/busybox:latest"
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nARG TOKEN\n"
                                              f"RUN ({pid1_report()}) > /pid1\n"})
    build(aishell, ctx, "-t", "pid1", "--build-arg", f"TOKEN={secret}")
    r = aishell("exec", "--image", "pid1", "--", "cat", "/pid1", user="unpriv",
                env={"AISHELL_USERNS": "subuid"})
    assert secret not in r.stdout, r.stdout
    assert_pid1_hides(parse_pid1_report(r.stdout), secret)
