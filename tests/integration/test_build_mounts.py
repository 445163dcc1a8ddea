"""aishell build: RUN --mount (cache, bind, tmpfs, secret, ssh) and the --secret/--ssh flags,
built as the unprivileged user in both user namespace modes on the rt-busybox fixture image.
Every check reads the result independently: the layer tars (Python's tarfile), the config and
history JSON, umoci's unpacked tree, and the raw bytes of every file in the store."""
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from helpers import users
from helpers.build import build, layer_members, manifest_and_config
from helpers.checks import assert_one_error, assert_store_unchanged, umoci_unpack
from helpers.store import snapshot, verify_store

MODES = ["subuid", "single"]


@pytest.fixture
def base(aishell, registry, rt_images):
    """rt-busybox in a local registry; its reference (a build pulls it)."""
    reg = registry("http")
    rt_images.push(rt_images.busybox, reg, "busybox:latest")
    return f"{reg.host}/busybox:latest"


def chown_up(aishell, path, top):
    d = path
    while d != top and d.startswith(top):
        os.chown(d, aishell.entry.pw_uid, aishell.entry.pw_gid)
        d = os.path.dirname(d)


def make_context(aishell, files, name="ctx"):
    """A build context owned by the unprivileged user: {relpath: str|bytes}."""
    ctx = aishell.make_dir(os.path.join(aishell.workdir, name))
    for rel, content in files.items():
        path = os.path.join(ctx, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
        os.chmod(path, 0o755 if rel.startswith("root/") else 0o644)
        chown_up(aishell, path, ctx)
    return ctx


def new_layers(store, name, base):
    """Member names of each layer the build added on top of the base image."""
    manifest, _ = manifest_and_config(store, name)
    base_manifest, _ = manifest_and_config(store, base)
    added = manifest["layers"][len(base_manifest["layers"]):]
    return [set(layer_members(store, d)) for d in added]


def store_files_containing(store, needle):
    """Every file in the store (gzip blobs decompressed) whose bytes contain needle."""
    hits = []
    for root, _dirs, files in os.walk(store):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except PermissionError:
                continue
            if data[:2] == b"\x1f\x8b":
                try:
                    data = gzip.decompress(data)
                except OSError:
                    pass
            if needle in data:
                hits.append(path)
    return hits


@pytest.mark.parametrize("mode", MODES)
def test_cache_mount_keeps_its_content_between_builds(aishell, base, tmp_path, mode):
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
RUN --mount=type=cache,target=/var/cache/app echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /seen
RUN --mount=type=cache,id=/var/cache/app,target=/other,readonly cat /other/log | wc -l > /seen-by-id
"""})
    build(aishell, ctx, "-t", "cache:1", mode=mode)
    second = build(aishell, ctx, "--no-cache", "-t", "cache:2", mode=mode)
    assert "CACHED" not in second.stderr
    store = aishell.store
    for tag, runs in (("cache:1", "1"), ("cache:2", "2")):
        rootfs = umoci_unpack(store, tag, tmp_path / tag.replace(":", "-"))
        assert open(os.path.join(rootfs, "seen")).read().strip() == runs, tag
        assert open(os.path.join(rootfs, "seen-by-id")).read().strip() == runs, tag
        # The cache's content and its mountpoint never land in the image.
        assert not os.path.exists(os.path.join(rootfs, "var/cache")), tag
        assert not os.path.exists(os.path.join(rootfs, "other")), tag
    assert new_layers(store, "cache:2", base) == [{"seen"}, {"seen-by-id"}]
    # The cache dir belongs to the caller (container root), so later builds and the user can use it.
    logs = [os.path.join(r, "log") for r, _d, f in os.walk(os.path.join(store, "cache", "mounts")) if "log" in f]
    assert len(logs) == 1, logs
    assert os.stat(logs[0]).st_uid == aishell.entry.pw_uid
    assert open(logs[0]).read() == "run\nrun\n"
    # A cached rebuild does not run the step again (the key has the mount's spec, not its content).
    third = build(aishell, ctx, "-t", "cache:3", mode=mode)
    assert re.search(r"^CACHED \[2/3\]", third.stderr, re.M), third.stderr
    assert open(logs[0]).read() == "run\nrun\n"


def test_cache_mount_settings_and_private_sharing(aishell, base, tmp_path):
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
RUN --mount=type=cache,target=/c,mode=0700,uid=1000,gid=1000 stat -c '%a %u %g' /c > /c-stat
RUN --mount=type=cache,target=/p,sharing=private,id=p --mount=type=cache,target=/q,sharing=locked,id=q \\
    touch /p/x /q/y && ls /p /q > /pq
"""})
    build(aishell, ctx, "-t", "cs:1")
    rootfs = umoci_unpack(aishell.store, "cs:1", tmp_path / "b")
    assert open(os.path.join(rootfs, "c-stat")).read().split() == ["700", "1000", "1000"]
    assert "x" in open(os.path.join(rootfs, "pq")).read()


@pytest.mark.parametrize("mode", MODES)
def test_secret_is_readable_and_lands_nowhere(aishell, base, tmp_path, mode):
    secret_value = "s3cret-value-4f7c1d"
    secret_file = aishell.write_home_file("secret.txt", secret_value, mode=0o600)
    # The Dockerfile names only digests of the values: the values themselves must appear nowhere.
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
RUN --mount=type=secret,id=tok sha256sum < /run/secrets/tok > /proof && stat -c '%a %u' /run/secrets/tok >> /proof
RUN --mount=type=secret,id=tok,env=TOKEN,target=/etc/tok.txt printf %s "$TOKEN" | sha256sum > /proof2 && test -s /etc/tok.txt
RUN --mount=type=secret,id=fromenv,env=ENVSECRET printf %s "$ENVSECRET" | sha256sum > /proof3 && test ! -e /run/secrets/fromenv
RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo ok > /proof4
"""})
    r = build(aishell, ctx, "--secret", f"id=tok,src={secret_file}", "--secret", "id=fromenv,env=AISHELL_T_SECRET",
              "-t", "sec:1", mode=mode, env={"AISHELL_T_SECRET": "from-the-env"})
    store = aishell.store
    assert new_layers(store, "sec:1", base) == [{"proof"}, {"proof2"}, {"proof3"}, {"proof4"}]
    _, config = manifest_and_config(store, "sec:1")
    dumped = json.dumps(config)
    assert secret_value not in dumped and "from-the-env" not in dumped
    assert not any("TOKEN" in e for e in config["config"].get("Env", []))
    assert secret_value not in r.stdout + r.stderr
    # No file of the store holds either secret: blobs, layer trees, cache entries, tmp.
    assert store_files_containing(store, secret_value.encode()) == []
    assert store_files_containing(store, b"from-the-env") == []
    assert not verify_store(store)
    rootfs = umoci_unpack(store, "sec:1", tmp_path / "b")
    digest = hashlib.sha256(secret_value.encode()).hexdigest()
    proof = open(os.path.join(rootfs, "proof")).read().split()
    assert proof[0] == digest and proof[-2:] == ["400", "0"], proof  # mode 0400, owned by root
    assert open(os.path.join(rootfs, "proof2")).read().split()[0] == digest
    assert open(os.path.join(rootfs, "proof3")).read().split()[0] == hashlib.sha256(b"from-the-env").hexdigest()
    # The secret's content is not in the step key: a new value still hits the cache (BuildKit).
    aishell.write_home_file("secret.txt", "other-value", mode=0o600)
    again = build(aishell, ctx, "--secret", f"id=tok,src={secret_file}", "--secret", "id=fromenv,env=AISHELL_T_SECRET",
                  "-t", "sec:2", mode=mode, env={"AISHELL_T_SECRET": "x"})
    assert re.search(r"^CACHED \[2/5\]", again.stderr, re.M), again.stderr


def test_secret_mode_and_owner(aishell, base, tmp_path):
    secret_file = aishell.write_home_file("s.txt", "v", mode=0o600)
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
RUN --mount=type=secret,id=s,mode=0440,uid=1000,gid=1000 stat -c '%a %u %g' /run/secrets/s > /st
"""})
    build(aishell, ctx, "--secret", f"id=s,src={secret_file}", "-t", "so:1")
    rootfs = umoci_unpack(aishell.store, "so:1", tmp_path / "b")
    assert open(os.path.join(rootfs, "st")).read().split() == ["440", "1000", "1000"]


@pytest.mark.parametrize("mode", MODES)
def test_missing_required_secret_fails_and_leaves_the_store(aishell, base, mode):
    aishell("pull", base, user="unpriv")
    before = snapshot(aishell.store)
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nRUN echo before > /b\n"
                                               "RUN --mount=type=secret,id=nope,required=true cat /run/secrets/nope\n"})
    r = build(aishell, ctx, "-t", "bad:1", mode=mode, check=False)
    assert r.returncode == 1
    assert_one_error(r, r"\[3/3\].*secret nope: not found")
    assert_store_unchanged(aishell.store, before)


def test_malformed_secret_and_ssh_flags(aishell, base):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\nRUN true\n"})
    r = build(aishell, ctx, "--secret", "src=/etc/hostname", check=False)
    assert_one_error(r, r"invalid --secret \"src=/etc/hostname\": the secret has no id")
    r = build(aishell, ctx, "--secret", "id=a,color=red", check=False)
    assert_one_error(r, r"unexpected key 'color'")
    r = build(aishell, ctx, "--secret", "id=a,src=/nonexistent/file", check=False)
    assert_one_error(r, r"--secret id=a: stat /nonexistent/file")
    r = build(aishell, ctx, "--ssh", "default", check=False, env={"SSH_AUTH_SOCK": None})
    assert_one_error(r, r"invalid --ssh \"default\": invalid empty ssh agent socket")
    key = aishell.write_home_file("id_test", "not a socket")
    r = build(aishell, ctx, "--ssh", f"default={key}", check=False)
    assert_one_error(r, r"is not a socket")
    assert not os.path.exists(os.path.join(aishell.store, "oci"))  # refused before the store was touched


def _ssh_add_closure(aishell):
    """ssh-add and the shared objects it loads, as context files under root/."""
    ssh_add = shutil.which("ssh-add")
    out = subprocess.run(["ldd", ssh_add], capture_output=True, text=True, check=True).stdout
    paths = [ssh_add]
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            paths.append(m.group(1))
    files = {}
    for p in paths:
        with open(os.path.realpath(p), "rb") as f:
            files["root" + p] = f.read()
    return files


@pytest.mark.parametrize("mode", MODES)
def test_ssh_agent_is_forwarded(aishell, base, tmp_path, mode):
    if not shutil.which("ssh-agent") or not shutil.which("ssh-keygen"):
        pytest.fail("ssh-agent and ssh-keygen are needed (Debian's openssh-client)", pytrace=False)
    agent_dir = aishell.make_dir(os.path.join(aishell.workdir, "agent"))
    sock = os.path.join(agent_dir, "agent.sock")
    prefix = users.as_user_prefix(aishell.entry)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": aishell.home}
    agent = subprocess.Popen(prefix + ["ssh-agent", "-D", "-a", sock], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            assert time.monotonic() < deadline, "ssh-agent did not create its socket"
            time.sleep(0.05)
        key = os.path.join(agent_dir, "key")
        subprocess.run(prefix + ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aishell-test-key", "-f", key],
                       env=env, check=True, capture_output=True)
        subprocess.run(prefix + ["ssh-add", key], env={**env, "SSH_AUTH_SOCK": sock}, check=True, capture_output=True)
        files = _ssh_add_closure(aishell)
        files["Dockerfile"] = f"""\
FROM {base}
COPY root/ /
RUN --mount=type=ssh echo "$SSH_AUTH_SOCK" > /sock && test -S /run/buildkit/ssh_agent.0 && ssh-add -l > /keys
RUN --mount=type=ssh,id=other,target=/tmp/agent.sock SSH_AUTH_SOCK=/tmp/agent.sock ssh-add -l > /keys2
RUN --mount=type=ssh,id=absent echo "$SSH_AUTH_SOCK" > /sock3 && test ! -e /run/buildkit/ssh_agent.0
"""
        ctx = make_context(aishell, files)
        build(aishell, ctx, "--ssh", "default", "--ssh", f"other={sock}", "-t", "ssh:1", mode=mode,
              env={"SSH_AUTH_SOCK": sock})
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    rootfs = umoci_unpack(aishell.store, "ssh:1", tmp_path / "b")
    assert open(os.path.join(rootfs, "sock")).read().strip() == "/run/buildkit/ssh_agent.0"
    assert "aishell-test-key" in open(os.path.join(rootfs, "keys")).read()
    assert "aishell-test-key" in open(os.path.join(rootfs, "keys2")).read()
    assert open(os.path.join(rootfs, "sock3")).read().strip() == "/run/buildkit/ssh_agent.0"
    assert new_layers(aishell.store, "ssh:1", base)[1:] == [{"sock", "keys"}, {"keys2"}, {"sock3"}]
    assert not os.path.exists(os.path.join(rootfs, "run"))

    # A required agent that was not forwarded is an error.
    ctx2 = make_context(aishell, {"Dockerfile": f"FROM {base}\nRUN --mount=type=ssh,required=true true\n"}, name="ctx2")
    r = build(aishell, ctx2, mode=mode, check=False)
    assert_one_error(r, r"no SSH agent \"default\" forwarded")


@pytest.mark.parametrize("mode", MODES)
def test_bind_mounts_from_the_context(aishell, base, tmp_path, mode):
    ctx = make_context(aishell, {
        "Dockerfile": f"""\
FROM {base}
RUN --mount=type=bind,source=data,target=/mnt/data cat /mnt/data/f > /copy && ls /mnt/data > /listing \\
    && ! touch /mnt/data/new 2>/dev/null && echo ro > /ro
RUN --mount=type=bind,source=data,target=/mnt/data,rw echo changed > /mnt/data/f && cat /mnt/data/f > /saw
RUN --mount=target=/whole cat /whole/data/f > /whole-f
""",
        "data/f": "from the context\n", "data/skip.log": "ignored\n", "other.txt": "o\n",
        ".dockerignore": "**/*.log\n"})
    build(aishell, ctx, "-t", "bind:1", mode=mode)
    store = aishell.store
    rootfs = umoci_unpack(store, "bind:1", tmp_path / "b1")
    assert open(os.path.join(rootfs, "copy")).read() == "from the context\n"
    assert open(os.path.join(rootfs, "listing")).read().split() == ["f"]  # .dockerignore applies
    assert open(os.path.join(rootfs, "ro")).read() == "ro\n"
    assert open(os.path.join(rootfs, "saw")).read() == "changed\n"
    assert open(os.path.join(rootfs, "whole-f")).read() == "from the context\n"
    assert open(os.path.join(ctx, "data", "f")).read() == "from the context\n"  # rw writes are discarded
    assert new_layers(store, "bind:1", base) == [{"copy", "listing", "ro"}, {"saw"}, {"whole-f"}]

    # The bound files are part of the step key; other context files are not (for the first RUN).
    with open(os.path.join(ctx, "other.txt"), "w") as f:
        f.write("changed\n")
    r = build(aishell, ctx, "-t", "bind:2", mode=mode)
    assert re.search(r"^CACHED \[2/4\]", r.stderr, re.M) and re.search(r"^CACHED \[3/4\]", r.stderr, re.M), r.stderr
    assert re.search(r"^\[4/4\]", r.stderr, re.M), r.stderr  # /whole binds all of the context
    with open(os.path.join(ctx, "data", "f"), "w") as f:
        f.write("new content\n")
    r = build(aishell, ctx, "-t", "bind:3", mode=mode)
    assert re.search(r"^\[2/4\]", r.stderr, re.M), r.stderr
    rootfs = umoci_unpack(store, "bind:3", tmp_path / "b3")
    assert open(os.path.join(rootfs, "copy")).read() == "new content\n"


def test_bind_mounts_from_a_stage(aishell, base, tmp_path):
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base} AS builder
RUN mkdir -p /out/sub && echo built > /out/sub/artifact && chmod 750 /out/sub/artifact
FROM {base}
RUN --mount=type=bind,from=builder,source=/out,target=/b stat -c '%a' /b/sub/artifact > /mode && cp /b/sub/artifact /got \\
    && ! touch /b/x 2>/dev/null
RUN --mount=from=builder,target=/st,rw test -f /st/out/sub/artifact && touch /st/written && echo ok > /whole
RUN --mount=from=builder,source=/out/sub/artifact,target=/one.txt cat /one.txt > /one
RUN --mount=type=cache,from=builder,source=/out,target=/seeded cat /seeded/sub/artifact > /seed && echo more > /seeded/more
RUN --mount=type=cache,from=builder,source=/out,target=/seeded cat /seeded/more > /seed2
"""})
    build(aishell, ctx, "-t", "bs:1")
    rootfs = umoci_unpack(aishell.store, "bs:1", tmp_path / "b")
    assert open(os.path.join(rootfs, "got")).read() == "built\n"
    assert open(os.path.join(rootfs, "mode")).read().strip() == "750"
    assert open(os.path.join(rootfs, "whole")).read() == "ok\n"
    assert open(os.path.join(rootfs, "one")).read() == "built\n"
    # A cache seeded from a stage keeps what later RUNs write to it.
    assert open(os.path.join(rootfs, "seed")).read() == "built\n"
    assert open(os.path.join(rootfs, "seed2")).read() == "more\n"
    assert new_layers(aishell.store, "bs:1", base) == [{"got", "mode"}, {"whole"}, {"one"}, {"seed"}, {"seed2"}]


@pytest.mark.parametrize("mode", MODES)
def test_tmpfs_mount_is_empty_and_not_in_the_layer(aishell, base, tmp_path, mode):
    ctx = make_context(aishell, {"Dockerfile": f"""\
FROM {base}
RUN mkdir /scratch && echo below > /scratch/hidden
RUN --mount=type=tmpfs,target=/scratch,size=1m test -z "$(ls -A /scratch)" && echo x > /scratch/new \\
    && grep " /scratch " /proc/mounts > /mountline
RUN --mount=type=tmpfs,target=/fresh/dir true
"""})
    build(aishell, ctx, "-t", "tmpfs:1", mode=mode)
    rootfs = umoci_unpack(aishell.store, "tmpfs:1", tmp_path / "b")
    line = open(os.path.join(rootfs, "mountline")).read()
    assert line.split()[2] == "tmpfs" and "size=1024k" in line, line
    assert sorted(os.listdir(os.path.join(rootfs, "scratch"))) == ["hidden"]
    assert not os.path.exists(os.path.join(rootfs, "fresh"))
    layers = new_layers(aishell.store, "tmpfs:1", base)
    assert layers[1] == {"mountline"}
    assert len(layers) == 2  # the last RUN changed nothing: no layer, no stub


def test_bad_mounts_fail_with_one_error_line(aishell, base):
    cases = [
        ("RUN --mount=type=bind,source=missing,target=/m true",
         r"RUN --mount=type=bind,source=/missing \(build context\)"),
        ("RUN --mount=type=cache,target=/c,uid=1000 true", r"uid 1000 or gid 0 is not mapped"),
        ("RUN --mount=type=bind,from=nosuchstage,target=/m true", r"nosuchstage"),
        ("ARG WHERE=/\nRUN --mount=type=cache,target=$WHERE true", r"invalid mount target \"/\""),
    ]
    for i, (line, pattern) in enumerate(cases):
        ctx = make_context(aishell, {"Dockerfile": f"FROM {base}\n{line}\n"}, name=f"bad{i}")
        r = build(aishell, ctx, mode="single", check=False)
        assert r.returncode == 1, (line, r.stderr)
        assert_one_error(r, pattern)
    # The first failed build pulled the base: the rollback keeps what index.json references.
    assert not verify_store(aishell.store)
