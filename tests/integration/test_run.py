"""`aishell` (a shell in the project's image), `aishell run` and `aishell exec` started in a project:
the project bound at its own path and made the working directory, bash preferred over sh, the
image's ENTRYPOINT, exit statuses, the host's terminal/locale/proxy variables and git identity,
the ssh agent, named volumes (made in the store on first use, leased while used), and who owns
what a run makes in the project (the caller, by default, with keep-id and with an image whose
USER is dev, in both user namespace modes). Images from helpers/runtime_images.py."""
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from helpers import users
from helpers.terminal import Terminal

HERE = os.path.dirname(os.path.abspath(__file__))
CONNECT_SRC = os.path.join(HERE, "..", "fixtures", "unix_connect.c")


def project(aishell, *sub):
    """A git project (a .git dir at its top) owned by the unprivileged user; returns the path of
    its subdir sub (or its top)."""
    top = aishell.make_dir(os.path.join(aishell.workdir, "proj"))
    aishell.make_dir(os.path.join(top, ".git"))
    path = top
    for part in sub:
        path = aishell.make_dir(os.path.join(path, part))
    return top, path


def run_in(aishell, cwd, *args, mode="subuid", env=None, input=None):
    """aishell ARGS as the unprivileged user with cwd as its current directory."""
    full_env = {"AISHELL_USERNS": mode, **(env or {})}
    return subprocess.run(aishell.command(args, "unpriv"), env=aishell.env_for("unpriv", full_env), cwd=cwd,
                          input=input, text=True, capture_output=True, timeout=120)


def caller(unpriv_user):
    return pwd.getpwnam(unpriv_user)


# --- the shell --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_aishell_alone_is_a_shell_in_the_project_dir_on_a_terminal(aishell, pulled, mode):
    image = pulled("busybox")
    top, sub = project(aishell, "src", "lib")
    with open(os.path.join(top, "README"), "w") as f:
        f.write("top of the project\n")
    users.chown_tree(top, aishell.entry)
    term = Terminal(aishell, ["--image", image], mode, cwd=sub)
    try:
        # The project's top is bound (the git top-level, not only the current dir).
        term.type("pwd; cat ../../README; [ -t 0 ] && [ -t 1 ] && echo TERMINAL\n")
        # The terminal is the container's own /dev/pts/N (a host pty would be "not a tty").
        term.type('t=$(tty) && [ -c "$t" ] && echo "INSIDE $t"; echo DONE-$((6*7)); exit 4\n')
        out = term.read_until("DONE-42")
        assert f"{sub}\r\n" in out, out
        assert "top of the project" in out
        assert "TERMINAL\r\n" in out
        assert re.search(r"\r\nINSIDE /dev/pts/\d+\r\n", out), out
        assert term.proc.wait(timeout=20) == 4
    finally:
        term.close()


def test_the_shell_is_bash_when_the_image_has_it_else_sh(aishell, pulled):
    tools, busybox = pulled("tools"), pulled("busybox")
    _, cwd = project(aishell)
    r = run_in(aishell, cwd, "--image", tools, input="readlink /proc/$$/exe; echo $0\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/usr/bin/bash", "bash"]
    r = run_in(aishell, cwd, "--image", busybox, input="readlink /proc/$$/exe; echo $0\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/bin/busybox", "sh"]


def test_the_images_entrypoint_applies_to_the_shell(aishell, pulled):
    image = pulled("entry")
    _, cwd = project(aishell)
    r = run_in(aishell, cwd, "--image", image, input="echo in-shell $0\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["ENTRY-RAN sh", "in-shell sh"]


def test_run_passes_the_commands_status_and_has_no_terminal_without_one(aishell, pulled):
    image = pulled("busybox")
    _, cwd = project(aishell)
    r = run_in(aishell, cwd, "run", "--image", image, "--", "sh", "-c", "tty; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() == "not a tty"
    # stdin reaches the command (run keeps it open; exec needs -i).
    r = run_in(aishell, cwd, "run", "--image", image, "cat", input="piped\n")
    assert (r.returncode, r.stdout) == (0, "piped\n"), r.stderr
    r = run_in(aishell, cwd, "exec", "--image", image, "cat", input="piped\n")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr


def test_run_on_a_terminal_gives_the_command_a_pts_of_the_containers_devpts(aishell, pulled):
    """On a terminal, run's command has /dev/pts/N of the container's own devpts as stdio, of
    the host terminal's size (a host pty would be no file inside: `tty` says "not a tty")."""
    image = pulled("busybox")
    _, cwd = project(aishell)
    term = Terminal(aishell, ["run", "--image", image, "--", "sh", "-c",
                              't=$(tty) && [ -c "$t" ] && echo "INSIDE $t"; test -t 0 && echo STDIN-TTY; '
                              'stty size; exit 5'], "subuid", cwd=cwd)
    try:
        assert term.proc.wait(timeout=20) == 5
        out = term.read_until("\r\n24 80\r\n")
        assert re.search(r"INSIDE /dev/pts/\d+\r\nSTDIN-TTY\r\n", out), out
    finally:
        term.close()


def test_exec_runs_in_the_current_dir_of_the_project_and_not_in_the_root(aishell, pulled):
    image = pulled("busybox")
    top, sub = project(aishell, "a")
    r = run_in(aishell, sub, "exec", "--image", image, "--", "sh", "-c", "pwd; ls -a ..")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [sub, ".", "..", ".git", "a"]
    # From / nothing is bound over the image's root: the image's WORKDIR applies.
    r = run_in(aishell, "/", "exec", "--image", image, "pwd")
    assert (r.returncode, r.stdout) == (0, "/\n"), r.stderr
    r = run_in(aishell, sub, "exec", "--image", image, "-w", "/tmp", "pwd")
    assert (r.returncode, r.stdout) == (0, "/tmp\n"), r.stderr


# --- what passes through from the host --------------------------------------------------------
PASSED = {"TERM": "xterm-256color", "COLORTERM": "truecolor", "LANG": "de_DE.UTF-8", "LC_ALL": "C.UTF-8",
          "TZ": "Europe/Berlin", "http_proxy": "http://p:3128", "https_proxy": "http://p:3129",
          "no_proxy": "localhost", "HTTP_PROXY": "http://P:3128", "HTTPS_PROXY": "http://P:3129",
          "NO_PROXY": "LOCALHOST"}


def test_terminal_locale_and_proxy_variables_pass_through_and_e_wins(aishell, pulled):
    image = pulled("busybox")
    _, cwd = project(aishell)
    env = {**PASSED, "NOT_PASSED": "x"}
    r = run_in(aishell, cwd, "run", "--image", image, "-e", "LANG=C", "-e", "NO_PROXY", "--", "env",
               env={**env, "NO_PROXY": "from-e-too"})
    assert r.returncode == 0, r.stderr
    got = dict(line.split("=", 1) for line in r.stdout.splitlines())
    for key, value in PASSED.items():
        expected = {"LANG": "C", "NO_PROXY": "from-e-too"}.get(key, value)
        assert got.get(key) == expected, (key, got)
    assert "NOT_PASSED" not in got
    # Unset on the host: not invented inside.
    r = run_in(aishell, cwd, "exec", "--image", image, "env", env={**PASSED, "http_proxy": None, "TZ": None})
    assert r.returncode == 0, r.stderr
    got = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert got.get("https_proxy") == PASSED["https_proxy"], got
    assert "http_proxy" not in got and "TZ" not in got, got


def test_the_hosts_git_identity_makes_commits_inside(aishell, pulled):
    image = pulled("tools")
    top, cwd = project(aishell)
    os.rmdir(os.path.join(top, ".git"))  # made inside, by git
    aishell.write_home_file(".gitconfig", "[user]\n\tname = Ada Lovelace\n\temail = ada@example.org\n")
    r = run_in(aishell, cwd, "exec", "--image", image, "--", "sh", "-c",
               "git init -q . && echo x > f && git add f && git commit -qm first && "
               "git log -1 --format='%an <%ae> / %cn <%ce>'")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Ada Lovelace <ada@example.org> / Ada Lovelace <ada@example.org>"
    # The commit is in the project on the host, made by the caller.
    log = subprocess.run(users.as_user_prefix(aishell.entry) + ["git", "-C", top, "log", "--format=%an %s"],
                         capture_output=True, text=True, env={"HOME": aishell.home, "PATH": "/usr/bin:/bin"})
    assert log.stdout.strip() == "Ada Lovelace first", log.stderr
    # -e wins over the identity; without git config nothing is set.
    r = run_in(aishell, cwd, "exec", "--image", image, "-e", "GIT_AUTHOR_NAME=Other", "env")
    assert r.returncode == 0, r.stderr
    assert "GIT_AUTHOR_NAME=Other\n" in r.stdout and "GIT_COMMITTER_NAME=Ada Lovelace\n" in r.stdout
    os.unlink(os.path.join(aishell.home, ".gitconfig"))
    r = run_in(aishell, cwd, "exec", "--image", image, "env")
    assert r.returncode == 0, r.stderr
    assert "PATH=" in r.stdout and "GIT_" not in r.stdout, r.stdout


def test_the_git_identity_is_remembered_until_its_config_changes(aishell, pulled):
    """git runs on a start only when a file its answer came from (or could come from) changed:
    it cost more than the rest of a warm start (docs/performance.md)."""
    image = pulled("busybox")
    top, cwd = project(aishell)
    bindir = aishell.make_dir(os.path.join(aishell.workdir, "gitbin"))
    runs = os.path.join(aishell.home, "git-runs")
    with open(os.path.join(bindir, "git"), "w") as f:
        f.write(f"#!/bin/sh\necho run >> {runs}\nexec /usr/bin/git \"$@\"\n")
    os.chmod(os.path.join(bindir, "git"), 0o755)
    aishell.write_home_file(".gitconfig", "[user]\n\tname = Ada Lovelace\n")
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}

    def identity():
        r = run_in(aishell, cwd, "exec", "--image", image, "env", env=env)
        assert r.returncode == 0, r.stderr
        names = [line for line in r.stdout.splitlines() if line.startswith("GIT_AUTHOR_NAME=")]
        with open(runs) as f:
            return names, len(f.read().splitlines())

    # An answer read from files changed in the last two seconds is not remembered (a timestamp
    # tick may hide a second change): wait until the config, the project and git have settled.
    time.sleep(2.1)
    assert identity() == (["GIT_AUTHOR_NAME=Ada Lovelace"], 1)
    assert identity() == (["GIT_AUTHOR_NAME=Ada Lovelace"], 1)  # remembered: git did not run
    aishell.write_home_file(".gitconfig", "[user]\n\tname = Grace Hopper\n")
    assert identity() == (["GIT_AUTHOR_NAME=Grace Hopper"], 2)
    # The project becomes a real repository with its own identity.
    as_user = users.as_user_prefix(aishell.entry)
    git_env = {"HOME": aishell.home, "PATH": "/usr/bin:/bin"}
    subprocess.run(as_user + ["git", "-C", top, "init", "-q"], check=True, env=git_env)
    subprocess.run(as_user + ["git", "-C", top, "config", "user.name", "Repo Person"], check=True, env=git_env)
    assert identity() == (["GIT_AUTHOR_NAME=Repo Person"], 3)
    os.unlink(os.path.join(aishell.home, ".gitconfig"))
    subprocess.run(as_user + ["git", "-C", top, "config", "--unset", "user.name"], check=True, env=git_env)
    assert identity() == ([], 4)


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_the_ssh_agent_socket_is_reachable_inside(aishell, pulled, mode):
    image = pulled("busybox")
    _, cwd = project(aishell)
    bindir = aishell.make_dir(os.path.join(aishell.workdir, "bin"))
    subprocess.run(["cc", "-static", "-o", os.path.join(bindir, "unix_connect"), CONNECT_SRC], check=True)
    # As ssh-agent makes it: a 0700 dir in /tmp (a socket path has at most 107 bytes).
    agent_dir = tempfile.mkdtemp(prefix="ssh-", dir="/tmp")
    os.chown(agent_dir, aishell.entry.pw_uid, aishell.entry.pw_gid)
    path = os.path.join(agent_dir, "agent.1")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chown(path, aishell.entry.pw_uid, aishell.entry.pw_gid)
    os.chmod(path, 0o600)
    server.listen(1)

    def answer():
        conn, _ = server.accept()
        conn.sendall(b"AGENT-HERE\n")
        conn.close()
    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        r = run_in(aishell, cwd, "exec", "--image", image, "-v", f"{bindir}:/probe:ro", "--", "sh", "-c",
                   'echo "$SSH_AUTH_SOCK"; /probe/unix_connect "$SSH_AUTH_SOCK"', mode=mode,
                   env={"SSH_AUTH_SOCK": path})
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["/run/aishell/ssh-auth.sock", "AGENT-HERE"]
    finally:
        server.close()
        shutil.rmtree(agent_dir, ignore_errors=True)
    # Not set on the host: neither bound nor set inside.
    r = run_in(aishell, cwd, "exec", "--image", image, "--", "sh", "-c",
               "echo ${SSH_AUTH_SOCK:-none}; ls -A /run/aishell 2>/dev/null; echo end",
               mode=mode, env={"SSH_AUTH_SOCK": None})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["none", "end"], r.stdout


# --- named volumes ----------------------------------------------------------------------------
def test_a_named_volume_is_made_in_the_store_on_first_use_and_kept(aishell, pulled):
    image = pulled("busybox")
    _, cwd = project(aishell)
    volume = os.path.join(aishell.store, "volumes", "cache")
    assert not os.path.exists(volume)
    r = run_in(aishell, cwd, "exec", "--image", image, "-v", "cache:/cache", "--", "sh", "-c",
               "echo kept > /cache/data")
    assert r.returncode == 0, r.stderr
    assert os.path.isdir(volume)
    assert os.stat(os.path.join(aishell.store, "volumes")).st_mode & 0o777 == 0o700
    r = run_in(aishell, cwd, "exec", "--image", image, "-v", "cache:/elsewhere:ro", "--", "sh", "-c",
               "cat /elsewhere/data; touch /elsewhere/x 2>/dev/null || echo read-only")
    assert r.stdout.split() == ["kept", "read-only"], r.stderr


def test_dot_paths_are_relative_to_the_current_dir_and_bad_names_are_refused(aishell, pulled):
    image = pulled("busybox")
    top, cwd = project(aishell, "sub")
    aishell.make_dir(os.path.join(cwd, "rel"))
    r = run_in(aishell, cwd, "exec", "--image", image, "-v", "./rel:/r", "-v", "..:/up:ro", "--", "sh", "-c",
               "touch /r/made; ls /up")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(cwd, "rel", "made"))
    assert r.stdout.split() == ["sub"]
    assert not os.path.exists(os.path.join(aishell.store, "volumes", "rel"))
    for bad in ("a/b:/x", "-x:/x", "a b:/x"):
        r = run_in(aishell, cwd, "exec", "--image", image, f"--volume={bad}", "true")
        assert r.returncode == 125, (bad, r.stderr)
        assert r.stderr.count("aishell: error:") == 1
        assert "bad volume name" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(aishell.store, "volumes", "a"))


def test_a_run_holds_a_lease_on_its_named_volume(aishell, pulled):
    image = pulled("busybox")
    _, cwd = project(aishell)
    env = aishell.env_for("unpriv", {"AISHELL_USERNS": "subuid"})
    p = subprocess.Popen(aishell.command(["exec", "-i", "--image", image, "-v", "data:/d", "--", "sh", "-c",
                                          "echo started; read x"], "unpriv"),
                         env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline() == "started\n", p.stderr.read()
        leases = os.path.join(aishell.store, "leases")
        texts = [open(os.path.join(leases, n)).read() for n in os.listdir(leases)]
        assert any("use volume data\n" in t for t in texts), texts
        p.stdin.write("\n")
        p.stdin.close()
        assert p.wait(timeout=30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# --- who owns what a run makes ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["subuid", "single"])
@pytest.mark.parametrize("variant", ["root", "keep-id", "user-dev"])
def test_files_made_in_the_project_belong_to_the_caller(aishell, pulled, unpriv_user, mode, variant):
    image = pulled("dev" if variant == "user-dev" else "busybox")
    me = caller(unpriv_user)
    _, cwd = project(aishell)
    opts = ["--userns=keep-id"] if variant == "keep-id" else []
    r = run_in(aishell, cwd, "exec", "--image", image, *opts, "--", "sh", "-c",
               "id -u; id -g; stat -c %u /bin/busybox; mkdir made && touch made/file && echo ok", mode=mode)
    assert r.returncode == 0, r.stderr
    inside = {"root": ["0", "0"], "keep-id": [str(me.pw_uid), str(me.pw_gid)], "user-dev": ["1000", "1000"]}[variant]
    # The image's files still belong to root inside in subuid mode (re-owned trees); single mode
    # maps one id, the caller, whose trees then show as the user's.
    image_owner = "0" if mode == "subuid" or variant == "root" else inside[0]
    assert r.stdout.split() == inside + [image_owner, "ok"], r.stdout
    for path in ("made", "made/file"):
        st = os.stat(os.path.join(cwd, path))
        assert (st.st_uid, st.st_gid) == (me.pw_uid, me.pw_gid), (path, st.st_uid, st.st_gid)


def test_a_user_dev_image_still_has_root_through_sudo_in_subuid_mode(aishell, pulled):
    """The caller is dev; container root is a subordinate id (podman's keep-id:uid=N layout),
    which sudo still reaches; the re-owned trees are made once for that mapping."""
    image = pulled("dev")
    _, cwd = project(aishell)
    r = run_in(aishell, cwd, "exec", "--image", image, "--", "sh", "-c", "id -un; sudo -n id -u; stat -c %U /home/dev")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["dev", "0", "dev"]
    dirs = [n for n in os.listdir(aishell.store) if n.startswith("layers-idmap-")]
    assert len(dirs) == 1


def test_a_store_inside_the_project_is_hidden_from_the_run(aishell, pulled, registry, rt_images):
    """A project that contains the store (the home directory, which holds ~/.local/share/aishell)
    is bound without it: a container must never write the trees and caches later runs trust."""
    image = pulled("busybox")
    store = os.path.join(aishell.home, ".local", "share", "aishell")
    env = {"AISHELL_STORE": store}
    aishell.make_dir(os.path.dirname(os.path.dirname(store)))
    aishell.make_dir(os.path.dirname(store))
    r = run_in(aishell, aishell.home, "pull", image, env=env)
    assert r.returncode == 0, r.stderr
    r = run_in(aishell, aishell.home, "exec", "--image", image, "--", "sh", "-c",
               f"ls -A {store} | wc -l; touch {store}/x 2>/dev/null || echo refused; ls -d {aishell.home}/.local",
               env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "refused", f"{aishell.home}/.local"]
