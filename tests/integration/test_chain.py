"""The three-tier chain (DESIGN.md "The three-tier chain", issue 12): aishell:foundation from
setup, aishell:base built from ~/.aishell/Dockerfile or the foundation's alias, and each
project's aishell:ext-<hash> built from <project>/.aishell/Dockerfile, each rebuilt lazily,
once, when something it is built from changed. Driven through `aishell exec` without --image,
as the unprivileged user, with the rt-busybox fixture as the foundation."""
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tarfile

import pytest

from helpers.chain import BASE, BASE_LINE, EXT, EXT_LINE, built, ext_name, set_up_chain
from helpers.checks import assert_one_error, skopeo_inspect
from helpers.store import image_names, read_blob, verify_store
from helpers.terminal import Terminal


@pytest.fixture
def chain(aishell, registry, rt_images):
    return set_up_chain(aishell, registry, rt_images)


def test_no_dockerfile_base_is_the_foundation_and_nothing_is_built(chain):
    project = chain.project()
    r = chain.exec(project, "sh", "-c", "echo hi")
    assert r.stdout == "hi\n"
    assert built(r) == []
    names = chain.names()
    assert names["aishell:base"] == names["aishell:foundation"]
    assert not [n for n in names if n.startswith("aishell:ext-")]
    assert chain.record()["base"]["custom"] is False


def test_a_new_base_dockerfile_builds_on_the_next_run_only(chain):
    project = chain.project()
    chain.base_dockerfile(BASE)
    # setup never builds.
    chain.aishell("setup", user="unpriv")
    names = chain.names()
    assert names["aishell:base"] == names["aishell:foundation"]
    r = chain.exec(project, "cat", "/base-marker")
    assert r.stdout == "base-1\n"
    assert built(r) == [BASE_LINE]
    assert any(line.startswith("✓ Global base image built (") and line.endswith("s)")
               for line in r.stderr.splitlines()), r.stderr
    names = chain.names()
    assert names["aishell:base"] != names["aishell:foundation"]
    labels = chain.labels("aishell:base")
    assert labels["aishell.base.foundation.id"] == names["aishell:foundation"]
    assert labels["aishell.base.dockerfile.hash"].startswith("sha256:")
    again = chain.exec(project, "cat", "/base-marker")
    assert built(again) == []
    assert again.stderr == ""
    assert chain.names() == names


def test_certs_d_stays_out_of_the_base_context(chain):
    """~/.aishell/certs.d holds registry CAs and client keys: `COPY . /ctx/` in the base
    Dockerfile must not bake them into an image (which may be pushed), even against a
    .dockerignore exception, and a change there does not rebuild the base."""
    home = chain.aishell.home
    chain.write(os.path.join(home, ".aishell", "certs.d", "reg.example:5000", "client.key"), "PRIVATE KEY\n")
    chain.write(os.path.join(home, ".aishell", "tools.txt"), "tools\n")
    chain.write(os.path.join(home, ".aishell", ".dockerignore"), "!certs.d/**\n")
    chain.base_dockerfile("FROM aishell:foundation\nCOPY . /ctx/\n")
    project = chain.project()
    r = chain.exec(project, "sh", "-c", "cd /ctx && find . | sort")
    assert built(r) == [BASE_LINE]
    assert r.stdout.split() == [".", "./.dockerignore", "./Dockerfile", "./tools.txt"]
    chain.write(os.path.join(home, ".aishell", "certs.d", "reg.example:5000", "ca.crt"), "CA\n")
    assert built(chain.exec(project, "true")) == []


def test_base_edits_rebuild_base_then_ext_and_project_edits_only_ext(chain):
    chain.base_dockerfile(BASE)
    project = chain.project(dockerfile="FROM aishell:base\nCOPY data /data\nRUN cat /base-marker /data > /both\n",
                            files={"data": "data-1\n"})
    r = chain.exec(project, "cat", "/both")
    assert r.stdout == "base-1\ndata-1\n"
    assert built(r) == [BASE_LINE, EXT_LINE]
    ext = ext_name(project)
    first = chain.names()
    assert chain.labels(ext)["aishell.base.id"] == first["aishell:base"]
    assert chain.labels(ext)["aishell.project.path"] == os.path.realpath(project)

    # Editing the base Dockerfile rebuilds the base, then the ext built on it.
    chain.base_dockerfile(BASE.replace("base-1", "base-2"))
    r = chain.exec(project, "cat", "/both")
    assert r.stdout == "base-2\ndata-1\n"
    assert built(r) == [BASE_LINE, EXT_LINE]
    second = chain.names()
    assert second["aishell:base"] != first["aishell:base"] and second[ext] != first[ext]
    assert chain.labels(ext)["aishell.base.id"] == second["aishell:base"]

    # Editing only the project's Dockerfile rebuilds only the ext.
    chain.write(os.path.join(project, ".aishell", "Dockerfile"),
                "FROM aishell:base\nCOPY data /data\nRUN cat /base-marker /data > /both; echo x >> /both\n")
    r = chain.exec(project, "cat", "/both")
    assert r.stdout == "base-2\ndata-1\nx\n"
    assert built(r) == [EXT_LINE]
    assert chain.names()["aishell:base"] == second["aishell:base"]

    # Editing a file the ext COPYs rebuilds the ext.
    chain.write(os.path.join(project, ".aishell", "data"), "data-2\n")
    r = chain.exec(project, "cat", "/data")
    assert r.stdout == "data-2\n"
    assert built(r) == [EXT_LINE]
    assert built(chain.exec(project, "true")) == []


def image_parts(store, name):
    """(blob digests, layer tree names) of an image named in index.json."""
    digest = image_names(store)[name]["digest"]
    manifest = json.loads(read_blob(store, digest))
    config = json.loads(read_blob(store, manifest["config"]["digest"]))
    blobs = {digest, manifest["config"]["digest"]} | {layer["digest"] for layer in manifest["layers"]}
    return blobs, {d.split(":", 1)[1] for d in config["rootfs"]["diff_ids"]}


def store_parts(store):
    blobs = {"sha256:" + n for n in os.listdir(os.path.join(store, "oci", "blobs", "sha256"))}
    return blobs, set(os.listdir(os.path.join(store, "layers")))


def test_deleting_the_base_dockerfile_re_aliases_base_and_prune_takes_the_old_one(chain):
    project = chain.project()
    path = chain.base_dockerfile(BASE)
    chain.exec(project, "true")
    custom = chain.names()["aishell:base"]
    foundation_blobs, foundation_trees = image_parts(chain.aishell.store, "aishell:foundation")
    custom_blobs, custom_trees = image_parts(chain.aishell.store, "aishell:base")
    own_blobs, own_trees = custom_blobs - foundation_blobs, custom_trees - foundation_trees
    assert own_blobs and own_trees and own_blobs <= store_parts(chain.aishell.store)[0]
    os.unlink(path)
    r = chain.exec(project, "sh", "-c", "test -e /base-marker || echo gone")
    assert r.stdout == "gone\n"
    assert built(r) == []
    names = chain.names()
    assert names["aishell:base"] == names["aishell:foundation"]
    assert custom not in names.values()
    assert chain.record()["base"]["custom"] is False
    assert verify_store(chain.aishell.store) == []

    # The old base's blobs and layer trees go at the next prune; what remains verifies and runs.
    chain.aishell("volumes", "prune", "--yes", user="unpriv")
    blobs, trees = store_parts(chain.aishell.store)
    assert not own_blobs & blobs and not own_trees & {t for t in trees if not t.endswith(".owners")}
    assert foundation_blobs <= blobs
    assert verify_store(chain.aishell.store) == []
    for name in chain.names():
        skopeo_inspect(chain.aishell.store, name)
    assert chain.exec(project, "sh", "-c", "echo runs").stdout == "runs\n"


def test_from_foundation_builds_and_survives_a_base_change_unbuilt(chain):
    chain.base_dockerfile(BASE)
    on_base = chain.project("on-base", dockerfile=EXT)
    on_foundation = chain.project("on-foundation",
                                  dockerfile="FROM aishell:foundation\nRUN echo f > /f-marker\n")
    assert chain.exec(on_base, "cat", "/base-marker", "/ext-marker").stdout == "base-1\next-1\n"
    r = chain.exec(on_foundation, "sh", "-c", "cat /f-marker; test -e /base-marker || echo no-base")
    assert r.stdout == "f\nno-base\n"
    assert built(r) == [EXT_LINE]
    kept = chain.names()[ext_name(on_foundation)]
    assert chain.labels(ext_name(on_foundation))["aishell.base.id"] == chain.names()["aishell:foundation"]

    chain.base_dockerfile(BASE.replace("base-1", "base-2"))
    r = chain.exec(on_foundation, "cat", "/f-marker")
    assert built(r) == [BASE_LINE], "the base is rebuilt, the ext on the foundation is not"
    assert chain.names()[ext_name(on_foundation)] == kept
    r = chain.exec(on_base, "cat", "/base-marker")
    assert r.stdout == "base-2\n"
    assert built(r) == [EXT_LINE]


def test_a_failing_base_build_exits_125_with_its_output_and_is_retried(chain):
    project = chain.project()
    chain.base_dockerfile(BASE)
    chain.exec(project, "true")
    good = chain.names()["aishell:base"]
    chain.base_dockerfile("FROM aishell:foundation\nRUN echo step-output-here; exit 3\n")
    for _ in range(2):  # the next run retries (and fails the same way)
        r = chain.exec(project, "true", check=False)
        assert r.returncode == 125
        assert "step-output-here" in r.stderr
        assert built(r) == [BASE_LINE]
        assert_one_error(r, r"Dockerfile.*exit status 3")
        assert chain.names()["aishell:base"] == good, "the previous base is kept"
    chain.base_dockerfile(BASE.replace("base-1", "fixed"))
    assert chain.exec(project, "cat", "/base-marker").stdout == "fixed\n"


@pytest.mark.parametrize("tier", ["base", "ext"])
def test_a_dockerfile_from_its_own_image_is_one_error_naming_its_line(chain, tier):
    # FROM the image the Dockerfile builds: each build moves that image, which makes it stale
    # again, so every run used to build it once more on top of itself.
    project = chain.project("proj", dockerfile=EXT)
    chain.exec(project, "true")
    before = chain.names()
    if tier == "base":
        own = "aishell:base"
        path = chain.base_dockerfile(f"# the global base\nFROM {own}\nRUN echo again >> /stack\n")
        hint = "build the global base FROM aishell:foundation"
    else:
        own = ext_name(project)  # through a global ARG, as read_from_lines expands it
        path = chain.write(os.path.join(project, ".aishell", "Dockerfile"),
                           f"ARG ME={own}\nFROM $ME\nRUN echo again >> /stack\n")
        hint = "build the project image FROM aishell:base or aishell:foundation"
    for _ in range(2):
        r = chain.exec(project, "true", check=False)
        assert r.returncode == 125
        line = assert_one_error(r)
        assert line == (f"aishell: error: {path}:2: FROM {own} names the image this Dockerfile builds, "
                        f"so every run would rebuild it on top of itself (hint: {hint})"), line
        assert built(r) == []
        assert chain.names() == before
    c = chain.aishell("check", user="unpriv", cwd=project, check=False)
    assert c.returncode != 0 and f"{path}:2: FROM {own} names the image this Dockerfile builds" in c.stdout


def test_missing_foundation_is_one_error_saying_to_run_setup(aishell):
    project = os.path.join(aishell.workdir, "p")
    aishell.make_dir(project)
    r = aishell("exec", "true", user="unpriv", cwd=project, check=False)
    assert r.returncode == 125
    assert_one_error(r, r"aishell:foundation is not in the store.*run `aishell setup`")


def test_two_execs_started_together_build_the_ext_once(chain):
    project = chain.project(dockerfile="FROM aishell:foundation\nRUN sleep 1; echo once > /m\n")
    procs = [chain.aishell.popen("exec", "--network", "none", "cat", "/m", user="unpriv", cwd=project)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out == "once\n"
    lines = [line for _, err in outs for line in err.splitlines()]
    assert lines.count(EXT_LINE) == 1, lines
    assert len(chain.record()["exts"]) == 1


def test_a_run_waits_for_the_build_lock_and_says_so(chain):
    """Another aishell holds this ext's build lock (here: the test, so the wait is certain):
    the run says it waits, then checks again and builds."""
    project = chain.project(dockerfile=EXT)
    lock = os.path.join(chain.aishell.store, "chain", ext_name(project).replace("aishell:", "") + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchown(fd, chain.aishell.entry.pw_uid, chain.aishell.entry.pw_gid)
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = chain.aishell.popen("exec", "--network", "none", "cat", "/ext-marker", user="unpriv", cwd=project)
        ready, _, _ = select.select([p.stderr], [], [], 120)
        assert ready, "no output while the lock is held"
        assert p.stderr.readline() == "Waiting for another aishell to finish building the project image...\n"
        assert p.poll() is None
    finally:
        os.close(fd)  # releases the lock
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert out == "ext-1\n"
    assert err.splitlines().count(EXT_LINE) == 1


def stderr_line(proc, timeout=120):
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, f"no output from the run within {timeout}s"
    return proc.stderr.readline()


def test_a_base_rebuild_waits_for_an_ext_being_built_on_the_base(chain):
    """An ext records the base it was built on (aishell.base.id, the record's from) as the state
    read before its build, and its build resolves FROM aishell:base later; another project's run
    must not rebuild the base in between. Project a's first stage waits on a gate file, so its
    FROM aishell:base is resolved only after project b's run has been started on a changed base."""
    chain.base_dockerfile(BASE)
    b = chain.project("b")
    chain.exec(b, "true")
    gated = ("FROM aishell:foundation AS gate\n"
             "RUN --mount=type=bind,target=/ctx sh -c 'until [ -e /ctx/go ]; do sleep 0.05; done'\n"
             "FROM aishell:base\nCOPY --from=gate /bin/sh /gate-passed\n")
    a = chain.project("a", dockerfile=gated)
    run_a = chain.aishell.popen("exec", "--network", "none", "true", user="unpriv", cwd=a)
    run_b = None
    try:
        assert stderr_line(run_a) == EXT_LINE + "\n"  # its build has begun and waits at the gate
        chain.base_dockerfile(BASE.replace("base-1", "base-2"))
        run_b = chain.aishell.popen("exec", "--network", "none", "true", user="unpriv", cwd=b)
        b_first = stderr_line(run_b)
        if b_first != "Waiting for another aishell to finish building the global base image...\n":
            run_b.communicate(timeout=300)  # it went ahead: let it finish before a resolves its FROM
    finally:
        chain.write(os.path.join(a, ".aishell", "go"), "")
        _, err_a = run_a.communicate(timeout=300)
        err_b = run_b.communicate(timeout=300)[1] if run_b else ""
    assert run_a.returncode == 0, err_a
    assert run_b.returncode == 0, err_b

    ext = ext_name(a)
    label = chain.labels(ext)["aishell.base.id"]
    assert chain.record()["exts"][a]["from"]["aishell:base"] == label
    base_layers = [l["digest"] for l in json.loads(read_blob(chain.aishell.store, label))["layers"]]
    ext_manifest = json.loads(read_blob(chain.aishell.store, chain.names()[ext]))
    ext_layers = [l["digest"] for l in ext_manifest["layers"]]
    assert ext_layers[:len(base_layers)] == base_layers, "the ext's label names a base it was not built on"
    assert b_first == "Waiting for another aishell to finish building the global base image...\n"
    assert BASE_LINE in err_b.splitlines()


def test_rebuild_builds_the_ext_again_without_the_step_cache_and_quiet_says_nothing(chain):
    project = chain.project(dockerfile="FROM aishell:base\nRUN cat /proc/sys/kernel/random/uuid > /id\n")
    first = chain.exec(project, "cat", "/id")
    assert built(first) == [EXT_LINE]
    assert chain.exec(project, "cat", "/id").stdout == first.stdout
    again = chain.aishell("exec", "--network", "none", "--rebuild", "cat", "/id", user="unpriv", cwd=project,
                          timeout=300)
    assert built(again) == [EXT_LINE]
    assert again.stdout != first.stdout, "the RUN step ran again (no step cache)"
    quiet = chain.aishell("exec", "--network", "none", "--rebuild", "-q", "cat", "/id", user="unpriv", cwd=project,
                          timeout=300)
    assert quiet.stderr == ""
    assert quiet.stdout not in (first.stdout, again.stdout)
    r = chain.aishell("exec", "--rebuild", "--image", "aishell:foundation", "true", user="unpriv", cwd=project,
                      check=False)
    assert r.returncode == 125
    assert_one_error(r, r"--rebuild rebuilds the project's image; it does not apply to --image aishell:foundation")


def test_aishell_on_a_terminal_builds_with_the_progress_line_and_starts_a_shell_in_the_project(chain):
    """Bare `aishell` on a pty, through the chain (no --image): the project's image is built
    with the terminal's progress (the green check mark, not the plain lines), then the shell
    starts in the current directory of the project."""
    project = chain.project(dockerfile=EXT)
    sub = chain.aishell.make_dir(os.path.join(project, "src"))
    chain.aishell.make_dir(os.path.join(project, ".git"))
    term = Terminal(chain.aishell, [], "subuid", cwd=sub)
    try:
        out = term.read_until("Project image built (", timeout=300)
        assert "\x1b[32m✓\x1b[0m Project image built (" in out
        assert EXT_LINE + "\r\n" not in out, "plain progress lines on a terminal"
        term.type("pwd; cat /ext-marker; exit 3\n")
        out = term.read_until("ext-1", timeout=60)
        assert f"{sub}\r\n" in out
        assert term.proc.wait(timeout=20) == 3
    finally:
        term.close()


def blocked_signals(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        mask = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
    return {sig for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD) if mask & (1 << (sig - 1))}


def test_the_spinner_thread_takes_no_signal_and_ctrl_c_stops_the_build(chain):
    """The spinner draws from a thread. A process-directed signal goes to any thread that does
    not block it: SIGCHLD taken by the spinner was dropped (the RUN step's PID 1 exited, the
    supervisor never heard: `aishell` hung behind the spinner in one run of four) and Ctrl-C
    killed aishell past the build's rollback. Every thread but the main one blocks them, and
    Ctrl-C during the build exits 130 and leaves the store as it was."""
    project = chain.project(dockerfile="FROM aishell:base\nRUN echo started; sleep 60\n")
    before = chain.names()
    term = Terminal(chain.aishell, [], "subuid", cwd=project)
    try:
        term.read_until("Building project image", timeout=120)
        pid = term.proc.pid
        assert os.readlink(f"/proc/{pid}/exe") == os.path.realpath(chain.aishell.binary)
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        assert threads, "no spinner thread"
        for tid in threads:
            assert blocked_signals(pid, tid) == {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}, tid
        term.type("\x03")
        assert term.proc.wait(timeout=60) == 130
    finally:
        term.close()
    assert chain.names() == before
    assert verify_store(chain.aishell.store) == []


def test_setup_force_rebuilds_the_base_at_once_and_every_ext_on_its_next_run_without_the_step_cache(chain):
    """setup --force rebuilds everything (DESIGN.md): the base at once and each ext on its
    project's next run, none from the step cache. Each RUN writes a random value, so a step
    cache hit would keep it. The ext on the foundation is the telling one: the foundation is
    re-pulled unchanged, so nothing it is built on moved and only the generation says rebuild."""
    uuid = "cat /proc/sys/kernel/random/uuid"
    chain.base_dockerfile(f"FROM aishell:foundation\nRUN {uuid} > /base-id\n")
    on_base = chain.project("on-base", dockerfile=f"FROM aishell:base\nRUN {uuid} > /ext-id\n")
    on_foundation = chain.project("on-foundation", dockerfile=f"FROM aishell:foundation\nRUN {uuid} > /ext-id\n")
    ext_ids = {p: chain.exec(p, "cat", "/ext-id").stdout for p in (on_base, on_foundation)}
    base_id = chain.exec(on_base, "cat", "/base-id").stdout
    before = chain.names()

    r = chain.aishell("setup", "--force", user="unpriv")
    assert built(r) == [BASE_LINE]
    assert "Base image: custom (~/.aishell/Dockerfile)" in r.stdout
    assert chain.record()["generation"] == 1
    after_setup = chain.names()
    assert after_setup["aishell:foundation"] == before["aishell:foundation"]
    assert after_setup["aishell:base"] != before["aishell:base"], "the base is rebuilt at once"
    for p in (on_base, on_foundation):
        assert after_setup[ext_name(p)] == before[ext_name(p)], "setup itself builds no ext"
    assert chain.exec(on_base, "--image", "aishell:base", "cat", "/base-id").stdout != base_id, \
        "the base's RUN ran again (no step cache)"

    for p in (on_base, on_foundation):
        r = chain.exec(p, "cat", "/ext-id")
        assert built(r) == [EXT_LINE], "every ext rebuilds once after setup --force"
        assert r.stdout != ext_ids[p], "the ext's RUN ran again (no step cache)"
        assert built(chain.exec(p, "true")) == []
    after = chain.names()
    assert set(after) == set(before)
    assert after["aishell:foundation"] == before["aishell:foundation"]
    assert after["aishell:base"] == after_setup["aishell:base"]
    for p in (on_base, on_foundation):
        assert after[ext_name(p)] != before[ext_name(p)]
        assert chain.labels(ext_name(p))["aishell.base.id"] == after["aishell:base" if p == on_base else "aishell:foundation"]


def test_a_format_1_store_written_by_the_previous_release_is_upgraded(aishell, fixtures_dir):
    """tests/fixtures/stores/format1-hello.tar: the store `aishell setup` of the release before
    the chain (commit 89a7f16) wrote for the hello fixture image (/hello.txt) as foundation."""
    with tarfile.open(os.path.join(fixtures_dir, "stores", "format1-hello.tar")) as t:
        t.extractall(aishell.store)
    for d, dirs, files in os.walk(aishell.store):
        for n in [d] + [os.path.join(d, x) for x in dirs + files]:
            os.lchown(n, aishell.entry.pw_uid, aishell.entry.pw_gid)
    with open(os.path.join(aishell.store, "version")) as f:
        assert f.read() == "1\n"
    before = {name: d["digest"] for name, d in image_names(aishell.store).items()}
    # A project image made of the old foundation and a static busybox: the chain builds on
    # the upgraded store and runs it.
    project = os.path.join(aishell.workdir, "p")
    aishell.make_dir(project)
    aishell.make_dir(os.path.join(project, ".aishell"))
    shutil.copy("/bin/busybox", os.path.join(project, ".aishell", "busybox"))
    with open(os.path.join(project, ".aishell", "Dockerfile"), "w") as f:
        f.write("FROM aishell:base\nCOPY busybox /bin/busybox\n")
    for n in ("busybox", "Dockerfile"):
        os.chown(os.path.join(project, ".aishell", n), aishell.entry.pw_uid, aishell.entry.pw_gid)
    r = aishell("exec", "--network", "none", "/bin/busybox", "cat", "/hello.txt", user="unpriv", cwd=project,
                timeout=300)
    assert r.stdout == "hello from a fixture\n"
    with open(os.path.join(aishell.store, "version")) as f:
        assert f.read() == "2\n"
    after = {name: d["digest"] for name, d in image_names(aishell.store).items()}
    for name, digest in before.items():
        assert after[name] == digest
    assert after["aishell:base"] == after["aishell:foundation"]
    assert os.path.isdir(os.path.join(aishell.store, "volumes"))
    assert verify_store(aishell.store) == []


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_files_made_through_an_ext_ending_in_user_dev_belong_to_the_caller(chain, mode):
    """The project's image sets USER dev: the caller is mapped to dev, so what dev makes in the
    project is the caller's on the host, in both user namespace modes."""
    project = chain.project(dockerfile="FROM aishell:base\n"
                                       "RUN echo dev:x:1234:1234::/home/dev:/bin/sh >> /etc/passwd && "
                                       "echo dev:x:1234: >> /etc/group && mkdir -p /home/dev && "
                                       "chown 1234:1234 /home/dev\n"
                                       "USER dev\n")
    r = chain.aishell("exec", "--network", "none", "sh", "-c", "id -un; id -u; mkdir made && touch made/file",
                      user="unpriv", cwd=project, env={"AISHELL_USERNS": mode}, timeout=300)
    assert r.stdout.split() == ["dev", "1234"], r.stderr
    for rel in ("made", "made/file"):
        st = os.stat(os.path.join(project, rel))
        assert (st.st_uid, st.st_gid) == (chain.aishell.entry.pw_uid, chain.aishell.entry.pw_gid), rel


def test_a_symlinked_project_dir_is_the_same_project_bound_at_its_real_path(chain):
    """The project is the real path of the current directory: entered through a symlink (and a
    shell's $PWD naming the link), it is bound and entered at its real path, and it has the one
    ext its real path names."""
    project = chain.project(dockerfile=EXT)
    chain.aishell.make_dir(os.path.join(project, ".git"))
    sub = chain.aishell.make_dir(os.path.join(project, "src"))
    r = chain.exec(sub, "sh", "-c", "pwd; cat /ext-marker")
    assert r.stdout == f"{sub}\next-1\n"
    assert built(r) == [EXT_LINE]
    names = chain.names()
    link = os.path.join(chain.aishell.workdir, "link-to-proj")
    os.symlink(project, link)
    via_link = os.path.join(link, "src")
    r = chain.aishell("exec", "--network", "none", "sh", "-c", f"pwd; cat /ext-marker; test -e {link} || echo no-link",
                      user="unpriv", cwd=via_link, env={"PWD": via_link}, timeout=300)
    assert r.stdout == f"{sub}\next-1\nno-link\n", "bound and entered at its real path only"
    assert built(r) == [], "the same project: its ext is not built again"
    assert chain.names() == names
    assert list(chain.record()["exts"]) == [os.path.realpath(project)]
    assert chain.labels(ext_name(project))["aishell.project.path"] == os.path.realpath(project)


def test_a_failing_run_in_a_project_build_exits_125_and_keeps_the_old_image(chain):
    project = chain.project(dockerfile=EXT)
    assert chain.exec(project, "cat", "/ext-marker").stdout == "ext-1\n"
    ext = ext_name(project)
    before = chain.names()
    record = chain.record()
    path = chain.write(os.path.join(project, ".aishell", "Dockerfile"),
                       "FROM aishell:base\nRUN echo ext-step-output-here; exit 7\n")
    for _ in range(2):  # each run retries, and fails the same way
        r = chain.exec(project, "cat", "/ext-marker", check=False)
        assert r.returncode == 125, "never the step's own status"
        assert "ext-step-output-here" in r.stderr
        assert built(r) == [EXT_LINE]
        assert_one_error(r, r"Dockerfile.*exit status 7")
        assert r.stdout == ""
        assert chain.names() == before, "the previous image keeps its name"
        assert chain.record()["exts"] == record["exts"]
    assert verify_store(chain.aishell.store) == []
    r = chain.aishell("exec", "--network", "none", "--image", ext, "cat", "/ext-marker", user="unpriv", cwd=project)
    assert r.stdout == "ext-1\n", "the old image still runs"
    chain.write(path, EXT.replace("ext-1", "ext-fixed"))
    r = chain.exec(project, "cat", "/ext-marker")
    assert r.stdout == "ext-fixed\n"
    assert built(r) == [EXT_LINE]


def test_a_file_the_projects_dockerignore_excludes_does_not_rebuild(chain):
    project = chain.project(dockerfile="FROM aishell:base\nCOPY . /ctx/\n",
                            files={".dockerignore": "notes.txt\nscratch/\n", "notes.txt": "one\n", "kept.txt": "k\n"})
    r = chain.exec(project, "sh", "-c", "cd /ctx && find . | sort")
    assert r.stdout.split() == [".", "./.dockerignore", "./Dockerfile", "./kept.txt"]
    assert built(r) == [EXT_LINE]
    names = chain.names()
    chain.write(os.path.join(project, ".aishell", "notes.txt"), "two, longer\n")
    chain.write(os.path.join(project, ".aishell", "scratch", "new"), "new\n")
    assert built(chain.exec(project, "true")) == []
    assert chain.names() == names
    # A file the build sees does rebuild (the same project, the same way of editing).
    chain.write(os.path.join(project, ".aishell", "kept.txt"), "k2\n")
    r = chain.exec(project, "cat", "/ctx/kept.txt")
    assert (r.stdout, built(r)) == ("k2\n", [EXT_LINE])


def test_prune_keeps_an_orphaned_project_image_a_run_holds(chain):
    """An ext orphaned while a run uses it (its base moved on: another project's run rebuilt
    it) stays, with its blobs and layer trees, until the run ends; the next prune takes it."""
    chain.base_dockerfile(BASE)
    held = chain.project("held", dockerfile=EXT)
    other = chain.project("other")
    chain.exec(held, "true")
    ext = ext_name(held)
    foundation_blobs, foundation_trees = image_parts(chain.aishell.store, "aishell:foundation")
    ext_blobs, ext_trees = image_parts(chain.aishell.store, ext)
    own_blobs, own_trees = ext_blobs - foundation_blobs, ext_trees - foundation_trees
    run = chain.aishell.popen("exec", "-i", "--network", "none", "sh", "-c",
                              "cat /ext-marker; read x; cat /base-marker /ext-marker", user="unpriv", cwd=held,
                              stdin=subprocess.PIPE)
    try:
        assert run.stdout.readline() == "ext-1\n", run.stderr.read()
        chain.base_dockerfile(BASE.replace("base-1", "base-2"))
        assert built(chain.exec(other, "true")) == [BASE_LINE]
        out = chain.aishell("volumes", "prune", "--dry-run", user="unpriv").stdout
        assert f"Kept: image {ext} is in use by a running container or build\n" in out, out
        assert f"image {ext} (" not in out, out
        chain.aishell("volumes", "prune", "--yes", user="unpriv")
        assert ext in chain.names()
        blobs, trees = store_parts(chain.aishell.store)
        assert ext_blobs <= blobs and ext_trees <= trees
        assert verify_store(chain.aishell.store) == []
        run.stdin.write("\n")
        run.stdin.close()
        assert run.wait(timeout=60) == 0, run.stderr.read()
        assert run.stdout.read() == "base-1\next-1\n"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    out = chain.aishell("volumes", "prune", "--yes", user="unpriv").stdout
    assert f"  image {ext} (built on aishell:base, which has moved on)\n" in out, out
    assert ext not in chain.names()
    blobs, trees = store_parts(chain.aishell.store)
    assert not own_blobs & blobs and not own_trees & trees
    assert verify_store(chain.aishell.store) == []
    r = chain.exec(held, "cat", "/base-marker", "/ext-marker")
    assert (r.stdout, built(r)) == ("base-2\next-1\n", [EXT_LINE])
