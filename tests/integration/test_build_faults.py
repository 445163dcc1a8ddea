"""aishell build on bad input and interruptions, as the unprivileged user in both user-namespace
modes: syntax errors name FILE:LINE; a failing RUN (also after a whole stage was built) exits 1
naming the step and the status, shows the output, tags nothing (an existing tag keeps its
image) and leaves the store exactly as it was; a missing COPY source or --from image names
what is missing; SIGINT during a RUN stops the build at once with status 130 (during another
step: at the next step, with the same clean-up), leaving no
process, mount, run dir or store change behind; the step cache follows content, not mtimes.

test_build_engine.py already covers a plain failing RUN, an unchanged rebuild and one context
file change (subuid mode); these tests add what it does not."""
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from helpers.build import (MODES, build, image_id, index_digest, make_context, step_lines,
                           write_context_file)
from helpers.checks import assert_one_error, assert_store_unchanged, wait_for
from helpers.store import image_names, snapshot


@pytest.fixture
def base(reg):
    return f"{reg.host}/busybox:latest"


def pulled_store(aishell, base, mode):
    """Pulls the base into the test's store (and records its id mapping with one tiny build),
    so a later snapshot is the state a failing build must leave untouched."""
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nLABEL ready=1\n"}, name="warm")
    build(aishell, ctx, "-t", "keep:1", mode=mode)
    return snapshot(aishell.store)


# --- syntax errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_syntax_errors_name_file_and_line(aishell, base, mode):
    before = pulled_store(aishell, base, mode)
    cases = [
        # An unknown instruction after a continued RUN: the line it starts on.
        ("Dockerfile.unknown", f"FROM {base}\nRUN echo a \\\n  && echo b\nFROBNICATE now\n", 4, r"unknown instruction"),
        # A bad flag in the second stage.
        ("Dockerfile.flag", f"FROM {base} AS one\nRUN true\n\nFROM one\nCOPY --frm=one /x /y\n", 5, r"--frm"),
        # COPY with a single argument.
        ("Dockerfile.arity", f"# comment\nFROM {base}\nCOPY onlyone\n", 3, r"COPY"),
    ]
    for name, text, line, what in cases:
        ctx = make_context(aishell, {name: text}, name="ctx-" + name.split(".")[1])
        r = build(aishell, ctx, "-f", os.path.join(ctx, name), "-t", "never:1", mode=mode, check=False)
        err = assert_one_error(r, re.escape(f"{name}:{line}:") + ".*" + what)
        assert r.returncode == 1, err
        assert not step_lines(r.stderr), r.stderr  # nothing ran
    assert "never:1" not in image_names(aishell.store)
    assert_store_unchanged(aishell.store, before)


# --- a failing RUN after a completed stage -----------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_failing_run_tags_nothing_and_rolls_back_a_finished_stage(aishell, base, mode):
    before_store = pulled_store(aishell, base, mode)
    keep_digest = index_digest(aishell.store, "keep:1")
    with open(os.path.join(aishell.store, "oci", "index.json"), "rb") as f:
        index_bytes = f.read()
    blobs = set(os.listdir(os.path.join(aishell.store, "oci", "blobs", "sha256")))
    layers = sorted(os.listdir(os.path.join(aishell.store, "layers")))

    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base} AS first
RUN echo stage-one > /one && mkdir /d && echo x > /d/x
COPY f /f
FROM first
RUN echo out-before-failure; echo err-before-failure >&2; exit 42
RUN echo never-reached
""", "f": "f\n"})
    # keep:1 is an existing image: a failed build tagged keep:1 must leave it where it was.
    r = build(aishell, ctx, "-t", "keep:1", "-t", "new:1", mode=mode, check=False)
    assert r.returncode == 1, r.stderr
    assert_one_error(r, r"\[5/6\] .*exit 42.*exit status 42")
    out = r.stdout + r.stderr
    assert "out-before-failure" in out and "err-before-failure" in out
    assert "never-reached" not in out and "[6/6]" not in r.stderr

    with open(os.path.join(aishell.store, "oci", "index.json"), "rb") as f:
        assert f.read() == index_bytes
    assert index_digest(aishell.store, "keep:1") == keep_digest and "new:1" not in image_names(aishell.store)
    assert set(os.listdir(os.path.join(aishell.store, "oci", "blobs", "sha256"))) == blobs
    assert sorted(os.listdir(os.path.join(aishell.store, "layers"))) == layers
    assert_store_unchanged(aishell.store, before_store)
    assert not [n for n in os.listdir(os.path.join(aishell.store, "tmp")) if not n.startswith(".")], \
        os.listdir(os.path.join(aishell.store, "tmp"))

    # The first stage's steps were not kept in the cache either: they run again.
    r = build(aishell, ctx, "--target", "first", "-t", "first:1", mode=mode)
    assert not any(s.startswith("CACHED") for s in step_lines(r.stderr)), r.stderr


# --- missing sources ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_missing_copy_sources_name_the_path(aishell, reg, base, mode):
    before = pulled_store(aishell, base, mode)
    cases = [
        ("COPY present.txt nothere.txt /dst/", r"nothere\.txt"),
        # A wildcard in a directory that is not there (one that matches nothing in a directory
        # that is copies nothing, as BuildKit: test_an_unmatched_wildcard_among_sources_is_skipped).
        ("COPY nosub/*.conf /etc/", r"nosub/\*\.conf"),
        ("ADD missing-archive.tar.gz /opt/", r"missing-archive\.tar\.gz"),
        # Excluded by .dockerignore: as if it were absent.
        ("COPY secret.key /k", r"secret\.key"),
    ]
    lines = []
    for i, (instr, pattern) in enumerate(cases):
        ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nRUN true\n{instr}\n",
                                     "present.txt": "p", "sub/a.txt": "a", "secret.key": "k",
                                     ".dockerignore": "*.key\n"}, name=f"ctx{i}")
        r = build(aishell, ctx, "-t", "never:1", mode=mode, check=False)
        lines.append(assert_one_error(r, pattern + r".*\(hint: "))
        assert r.returncode == 1 and os.path.join(ctx, "Dockerfile") + ":3" in lines[-1], lines[-1]
    # A --from stage source path that does not exist in that stage.
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base} AS b\nRUN mkdir /out\nFROM {base}\n"
                                               "COPY --from=b /out/artifact /usr/bin/\n"}, name="ctx-stage")
    r = build(aishell, ctx, "-t", "never:1", mode=mode, check=False)
    assert_one_error(r, r"/out/artifact")
    # A --from image that no registry has: the reference is named.
    missing = f"{reg.host}/nope:1"
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nCOPY --from={missing} /x /x\n"}, name="ctx-img")
    r = build(aishell, ctx, "-t", "never:1", mode=mode, check=False)
    assert_one_error(r, re.escape(missing))
    assert "never:1" not in image_names(aishell.store)
    assert_store_unchanged(aishell.store, before)
    # The step named is the COPY's own: the third of three.
    assert all(re.search(r"error: \[3/3\] (COPY|ADD) ", line) for line in lines), "\n".join(lines)


# --- SIGINT during a RUN -----------------------------------------------------------------------
SLEEP_MARK = "314159"


def _processes_with(predicate):
    """pids of every process (not this one) for which predicate(pid) is true."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if predicate(name):
                found.append(int(name))
        except OSError:  # gone meanwhile (ENOENT, ESRCH), or exiting (EINVAL on mountinfo)
            pass
    return found


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class OutputReader:
    """Reads a process's merged output in a thread; wait_for(text) blocks until it shows."""

    def __init__(self, stream):
        self.text = ""
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream):
        for line in stream:
            with self._cond:
                self.text += line
                self._cond.notify_all()

    def wait_for(self, text, timeout):
        with self._cond:
            if not self._cond.wait_for(lambda: text in self.text, timeout):
                raise AssertionError(f"{text!r} did not show within {timeout}s; output:\n{self.text}")

    def finish(self):
        self._thread.join(10)
        return self.text


@pytest.mark.parametrize("mode", MODES)
def test_sigint_during_run_stops_the_build_and_cleans_up(aishell, base, mode):
    before = pulled_store(aishell, base, mode)
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
COPY f /f
RUN echo sleeping-now && sleep {SLEEP_MARK}
RUN echo never-reached
""", "f": "f\n"})
    proc = aishell.popen("build", "-t", "never:1", ctx, user="unpriv",
                         env={"AISHELL_USERNS": mode}, stderr=subprocess.STDOUT)
    reader = OutputReader(proc.stdout)
    try:
        reader.wait_for("sleeping-now", 120)
        # The RUN's sleep is running inside the container now (it follows the echo at once).
        wait_for(lambda: _processes_with(lambda pid: f"sleep\0{SLEEP_MARK}\0".encode() in _read(f"/proc/{pid}/cmdline")),
                 timeout=20, what="the RUN's sleep to start")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=60)  # sleep would take 87 hours: anything short is prompt
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = reader.finish()
    assert elapsed < 60 and "never-reached" not in out, out

    # Nothing of the build is left: no process, no mount of the store, no run dir.
    store = aishell.store
    marker = f"AISHELL_STORE={store}\0".encode()
    assert not _processes_with(lambda pid: SLEEP_MARK.encode() in _read(f"/proc/{pid}/cmdline"))
    assert not _processes_with(lambda pid: marker in _read(f"/proc/{pid}/environ")), "aishell processes remain"
    mounts = _processes_with(lambda pid: store.encode() in _read(f"/proc/{pid}/mountinfo"))
    assert not mounts, f"processes still see mounts under {store}: {mounts}"
    assert store not in _read("/proc/self/mountinfo").decode()
    tmp = os.path.join(store, "tmp")
    assert not [n for n in os.listdir(tmp) if not n.startswith(".")], os.listdir(tmp)
    assert "never:1" not in image_names(store)
    assert_store_unchanged(store, before)

    # The user stopped it: status 130 (128+SIGINT, as a shell reports it) and one error line
    # naming the step, not "the command returned exit status 130" as if the RUN had failed.
    assert status == 130, f"exit status {status} after {elapsed:.1f}s\n{out}"
    errors = [line for line in out.splitlines() if line.startswith("aishell: error:")]
    assert len(errors) == 1 and re.search(r"interrupted", errors[0]) and "[3/4]" in errors[0], out


@pytest.mark.parametrize("mode", MODES)
def test_sigint_outside_a_run_stops_at_the_next_step_and_rolls_back(aishell, base, mode):
    """Ctrl-C (the whole process group, as a terminal sends it) during a COPY: the build holds
    the signal until the step is done, then stops before the next one and undoes what it wrote
    (the COPY's layer blob, cache entry, work dirs), with status 130 and one error line."""
    before = pulled_store(aishell, base, mode)
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
COPY big /big
COPY small /small
LABEL never=reached
""", "small": "s\n"})
    big = os.path.join(ctx, "big")
    with open(big, "wb") as f:
        f.truncate(300 << 20)  # 300 MB to read, hash, tar and compress: the COPY takes a while
    os.chown(big, aishell.entry.pw_uid, aishell.entry.pw_gid)
    proc = aishell.popen("build", "--progress=plain", "-t", "never:2", ctx, user="unpriv",
                         env={"AISHELL_USERNS": mode}, stderr=subprocess.STDOUT, start_new_session=True)
    reader = OutputReader(proc.stdout)
    try:
        reader.wait_for("COPY big /big", 120)
        os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = reader.finish()
    assert status == 130, f"exit status {status}\n{out}"
    errors = [line for line in out.splitlines() if line.startswith("aishell: error:")]
    assert len(errors) == 1 and "interrupted by SIGINT" in errors[0], out
    assert "[3/4] COPY small" in errors[0], out  # it stopped before the next step ...
    assert not any(line.startswith("[3/4]") for line in out.splitlines()), out  # ... which never started

    store = aishell.store
    marker = f"AISHELL_STORE={store}\0".encode()
    wait_for(lambda: not _processes_with(lambda pid: marker in _read(f"/proc/{pid}/environ")),
             timeout=10, what="aishell's processes to end")
    tmp = os.path.join(store, "tmp")
    assert not [n for n in os.listdir(tmp) if not n.startswith(".") and not n.startswith("userns-")], os.listdir(tmp)
    assert "never:2" not in image_names(store)
    assert_store_unchanged(store, before)


# --- the step cache follows content ------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_cache_follows_content_not_mtimes_nor_ignored_files(aishell, base, mode):
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
COPY conf/ /etc/app/
RUN cat /etc/app/* > /all
COPY src /src
RUN ls /src > /listing
""", "conf/a.conf": "a=1\n", "src/main.c": "int main;\n", "src/build.log": "noise\n",
        ".dockerignore": "**/*.log\n"})
    first = build(aishell, ctx, "-t", "c:1", mode=mode)

    def cached_flags(proc):
        return [s.startswith("CACHED") for s in step_lines(proc.stderr)]

    # mtimes only (touch) and an ignored file's content: every step cached, the same image.
    now = time.time() + 100
    for rel in ("conf/a.conf", "src/main.c", "Dockerfile"):
        os.utime(os.path.join(ctx, rel), (now, now))
    write_context_file(aishell, ctx, "src/build.log", "other noise\n")
    r = build(aishell, ctx, "-t", "c:2", mode=mode)
    assert cached_flags(r) == [False, True, True, True, True], r.stderr
    assert image_id(r) == image_id(first)

    # A new file in the second COPY's dir: the steps from that COPY on run again.
    write_context_file(aishell, ctx, "src/util.c", "int util;\n")
    r = build(aishell, ctx, "-t", "c:3", mode=mode)
    assert cached_flags(r) == [False, True, True, False, False], r.stderr
    assert image_id(r) != image_id(first)

    # The mode bits count too (COPY keeps them): chmod the first COPY's file.
    os.chmod(os.path.join(ctx, "conf/a.conf"), 0o600)
    r = build(aishell, ctx, "-t", "c:4", mode=mode)
    assert cached_flags(r) == [False, False, False, False, False], r.stderr
