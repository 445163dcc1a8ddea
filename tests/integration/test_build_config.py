"""aishell build: what lands in the image besides files, and how the command reports it.

- SOURCE_DATE_EPOCH (`--source-date-epoch N` or the environment): the same Dockerfile built in
  two fresh stores, at different times, gives the same manifest digest; layer mtimes are
  clamped to N, history `created` and the config's `created` are N; a store whose cache was
  filled without the epoch gives the same result as a fresh one.
- `--compression zstd`: the built layers are `application/vnd.oci.image.layer.v1.tar+zstd`,
  skopeo copies them out of the store (and zstd reads them back as tars), `aishell exec` runs
  the image.
- The config as Docker (BuildKit's dockerfile2llb) writes it: HEALTHCHECK (durations in ns),
  VOLUME, SHELL (and the shell form that follows it), ONBUILD (kept, then run and cleared in a
  child stage), LABEL, MAINTAINER (author), STOPSIGNAL, EXPOSE, USER, WORKDIR, ENTRYPOINT and
  CMD in both forms, and ENTRYPOINT resetting a CMD inherited from the base.
- `--label K=V`: set on the final config over the Dockerfile's labels, no history entry, the
  step cache still serves the steps.
- Output: `--quiet` prints only the image id on stdout; `--progress=plain` step lines; `-t`
  twice tags both names.

Builds run as the unprivileged user on rt-busybox from a loopback registry; the epoch and
compression tests in both userns modes."""
import io
import json
import os
import re
import subprocess
import tarfile
import time

import pytest

from helpers.build import (MODES, final_entries, image_id, index_digest, layer_members, make_context,
                           manifest_and_config, step_lines)
from helpers.checks import assert_one_error
from helpers.registry import start_registry
from helpers.runtime_images import ensure_runtime_images
from helpers.store import verify_store

EPOCH = 1234567890  # 2009-02-13T23:31:30Z
EPOCH_RFC3339 = "2009-02-13T23:31:30Z"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


@pytest.fixture(scope="module")
def base_ref(session_dir):
    rt = ensure_runtime_images()
    reg = start_registry("http", base_dir=session_dir)
    rt.push(rt.busybox, reg, "busybox:latest")
    yield f"{reg.host}/busybox:latest"
    reg.stop()


def build(runner, ctx, *args, mode="subuid", store=None, env=None, check=True):
    e = {"AISHELL_USERNS": mode}
    if store:
        e["AISHELL_STORE"] = store
    e.update(env or {})
    return runner("build", *args, ctx, user="unpriv", env=e, check=check, timeout=180)


# --- SOURCE_DATE_EPOCH ---------------------------------------------------------------------------
EPOCH_DOCKERFILE = """\
FROM {base}
COPY old.txt new.txt /files/
RUN mkdir -p /out/sub && echo built > /out/sub/f && ln -s sub/f /out/link
WORKDIR /work
ENV A=1
LABEL k=v
"""


def epoch_context(runner, base):
    ctx = make_context(runner, {"Dockerfile": EPOCH_DOCKERFILE.format(base=base), "old.txt": "old\n",
                                "new.txt": "new\n"})
    # One context file older than the epoch (kept), one newer (clamped).
    os.utime(os.path.join(ctx, "old.txt"), (1000000000, 1000000000))
    os.utime(os.path.join(ctx, "new.txt"), (EPOCH + 10**8, EPOCH + 10**8))
    return ctx


def check_clamped(store, name, base_layers):
    manifest, config = manifest_and_config(store, name)
    added = manifest["layers"][base_layers:]
    assert len(added) == 3, added  # COPY, RUN, WORKDIR's mkdir
    for desc in added:
        for path, info in layer_members(store, desc).items():
            assert info.mtime <= EPOCH, (path, info.mtime)
    copy = layer_members(store, added[0])
    assert copy["files/old.txt"].mtime == 1000000000 and copy["files/new.txt"].mtime == EPOCH
    run = layer_members(store, added[1])
    assert run["out/sub/f"].mtime == EPOCH and run["out/link"].mtime == EPOCH
    assert config["created"] == EPOCH_RFC3339
    ours = config["history"][-5:]
    assert [h["created"] for h in ours] == [EPOCH_RFC3339] * 5, ours
    assert ours[0]["created_by"].startswith("COPY ")


@pytest.mark.parametrize("mode", MODES)
def test_source_date_epoch_gives_the_same_digest_in_two_fresh_stores(aishell, base_ref, mode):
    ctx = epoch_context(aishell, base_ref)
    store_a = aishell.store
    store_b = aishell.make_dir(os.path.join(aishell.workdir, "store-b"))
    first = build(aishell, ctx, "--source-date-epoch", str(EPOCH), "-t", "epoch:1", mode=mode, store=store_a)
    time.sleep(1.1)  # a later second: nothing may depend on the wall clock
    second = build(aishell, ctx, "-t", "epoch:1", mode=mode, store=store_b, env={"SOURCE_DATE_EPOCH": EPOCH})
    assert "CACHED" not in second.stderr  # a fresh store: every step ran
    assert image_id(first) == image_id(second)
    assert index_digest(store_a, "epoch:1") == index_digest(store_b, "epoch:1")
    base_layers = len(manifest_and_config(store_a, base_ref)[0]["layers"])
    check_clamped(store_a, "epoch:1", base_layers)
    check_clamped(store_b, "epoch:1", base_layers)
    assert not verify_store(store_a) and not verify_store(store_b)


def test_source_date_epoch_ignores_a_cache_filled_without_it(aishell, base_ref):
    """A store that built the Dockerfile without the epoch still gives the epoch build's
    digest: what the epoch changes (mtimes, dates) is never taken from a cache entry made
    without it."""
    ctx = epoch_context(aishell, base_ref)
    fresh = aishell.make_dir(os.path.join(aishell.workdir, "store-fresh"))
    reference = build(aishell, ctx, "--source-date-epoch", str(EPOCH), "-t", "e:ref", store=fresh)
    build(aishell, ctx, "-t", "e:plain")
    time.sleep(1.1)
    epoch = build(aishell, ctx, "--source-date-epoch", str(EPOCH), "-t", "e:epoch")
    assert image_id(epoch) == image_id(reference), epoch.stderr
    # And the epoch build's own cache serves the next epoch build.
    again = build(aishell, ctx, "--source-date-epoch", str(EPOCH), "-t", "e:again")
    assert image_id(again) == image_id(reference)
    assert all(l.startswith("CACHED") for l in step_lines(again.stderr) if " FROM " not in l), again.stderr


def test_invalid_source_date_epoch_is_refused(aishell, base_ref):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\n"})
    r = build(aishell, ctx, env={"SOURCE_DATE_EPOCH": "yesterday"}, check=False)
    assert r.returncode != 0 and 'invalid SOURCE_DATE_EPOCH "yesterday"' in r.stderr, r.stderr


# --- --compression zstd --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_zstd_layers_read_by_skopeo_and_run_by_exec(aishell, base_ref, mode, tmp_path):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\nCOPY hello.txt /hello.txt\n"
                                               "RUN echo from-run > /run.txt\n",
                                 "hello.txt": "zstd hello\n"})
    build(aishell, ctx, "--compression", "zstd", "-t", "z:1", mode=mode)
    store = aishell.store
    manifest, _ = manifest_and_config(store, "z:1")
    base_layers = len(manifest_and_config(store, base_ref)[0]["layers"])
    added = manifest["layers"][base_layers:]
    assert [d["mediaType"] for d in added] == [ZSTD_LAYER, ZSTD_LAYER], added
    assert not verify_store(store)

    out = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{store}/oci:z:1", f"dir:{out}"], check=True,
                   capture_output=True, text=True)
    copied = json.loads((out / "manifest.json").read_text())
    assert [d["mediaType"] for d in copied["layers"][base_layers:]] == [ZSTD_LAYER, ZSTD_LAYER]
    names = set()
    for d in copied["layers"][base_layers:]:
        blob = (out / d["digest"].split(":")[1]).read_bytes()
        assert blob[:4] == b"\x28\xb5\x2f\xfd", "not a zstd frame"
        raw = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(raw)) as t:
            names |= set(t.getnames())
    assert {"hello.txt", "run.txt"} <= names, names

    r = aishell("exec", "--image", "z:1", "--", "cat", "/hello.txt", "/run.txt", user="unpriv",
                env={"AISHELL_USERNS": mode})
    assert r.stdout == "zstd hello\nfrom-run\n", r.stdout + r.stderr


# --- the config as Docker writes it ----------------------------------------------------------------
CONFIG_DOCKERFILE = """\
FROM {base} AS parent
CMD ["parent-cmd"]
ONBUILD RUN echo triggered > /onbuild.txt
ONBUILD LABEL from.onbuild=yes

FROM parent AS reset
ENTRYPOINT ["/bin/echo", "reset"]

FROM {base} AS shellforms
ENTRYPOINT echo entry
SHELL ["/bin/sh", "-xc"]
CMD echo shell-cmd
HEALTHCHECK NONE

FROM parent AS final
MAINTAINER Jane Doe <jane@example.com>
LABEL a=1 "b c"="d e" multi="x\\
 y"
EXPOSE 80 443/TCP 53/udp 8000-8001
VOLUME /data
VOLUME ["/cache", "/logs"]
VOLUME /more $NOT_SET_VAR/x
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m30s --start-interval=2s --retries=4 \\
  CMD ["/bin/check", "--fast"]
WORKDIR /srv
WORKDIR app
USER 1000:1000
CMD ["serve", "--port", "80"]
ENTRYPOINT ["/entry"]
"""


@pytest.fixture(scope="module")
def config_images(session_dir, _binary_checked, unpriv_user, base_ref):
    from helpers.build import module_runner
    runner = module_runner(session_dir, _binary_checked, unpriv_user, "config-images")
    ctx = make_context(runner, {"Dockerfile": CONFIG_DOCKERFILE.format(base=base_ref)})
    for target in ("parent", "reset", "shellforms", "final"):
        build(runner, ctx, "--target", target, "-t", f"cfg:{target}")
    return runner


def config_of(runner, name):
    return manifest_and_config(runner.store, name)[1]["config"]


def test_config_final_stage_as_docker_writes_it(config_images):
    c = config_of(config_images, "cfg:final")
    assert c["Healthcheck"] == {"Test": ["CMD", "/bin/check", "--fast"], "Interval": 30 * 10**9,
                                "Timeout": 5 * 10**9, "StartPeriod": 90 * 10**9, "StartInterval": 2 * 10**9,
                                "Retries": 4}
    assert c["Volumes"] == {"/data": {}, "/cache": {}, "/logs": {}, "/more": {}, "/x": {}}
    # A range is one key per port, as BuildKit's parsePortSpecs writes them.
    assert c["ExposedPorts"] == {"80/tcp": {}, "443/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert c["Labels"]["a"] == "1" and c["Labels"]["b c"] == "d e" and c["Labels"]["multi"] == "x y"
    assert c["StopSignal"] == "SIGUSR1"
    assert c["WorkingDir"] == "/srv/app"
    assert c["User"] == "1000:1000"
    # CMD set in this stage before ENTRYPOINT is kept (dockerfile2llb's cmdSet).
    assert c["Cmd"] == ["serve", "--port", "80"] and c["Entrypoint"] == ["/entry"]
    # The parent's ONBUILD triggers ran here and are not passed on.
    assert "OnBuild" not in c or not c["OnBuild"]
    assert c["Labels"]["from.onbuild"] == "yes"
    full = manifest_and_config(config_images.store, "cfg:final")[1]
    assert full["author"] == "Jane Doe <jane@example.com>"
    # Every metadata instruction is an empty_layer history entry.
    by = [h["created_by"] for h in full["history"] if h.get("empty_layer")]
    for prefix in ("MAINTAINER", "LABEL", "EXPOSE", "VOLUME", "STOPSIGNAL", "HEALTHCHECK", "USER", "CMD",
                   "ENTRYPOINT"):
        assert any(b.startswith(prefix) for b in by), (prefix, by)


def test_onbuild_is_kept_in_the_image_that_declares_it_and_runs_in_children(config_images, tmp_path):
    parent = config_of(config_images, "cfg:parent")
    assert parent["OnBuild"] == ["RUN echo triggered > /onbuild.txt", "LABEL from.onbuild=yes"]
    assert "from.onbuild" not in (parent.get("Labels") or {})
    manifest, _ = manifest_and_config(config_images.store, "cfg:final")
    entries = final_entries(config_images.store, manifest)
    assert "/onbuild.txt" in entries
    parent_manifest, _ = manifest_and_config(config_images.store, "cfg:parent")
    assert "/onbuild.txt" not in final_entries(config_images.store, parent_manifest)


def test_entrypoint_resets_an_inherited_cmd(config_images):
    c = config_of(config_images, "cfg:reset")
    assert c["Entrypoint"] == ["/bin/echo", "reset"]
    assert c.get("Cmd") in (None, []), c  # the parent's CMD is not inherited past ENTRYPOINT


def test_shell_forms_and_shell_instruction(config_images):
    c = config_of(config_images, "cfg:shellforms")
    # ENTRYPOINT before SHELL uses the default shell; CMD after it uses the new one.
    assert c["Entrypoint"] == ["/bin/sh", "-c", "echo entry"]
    assert c["Shell"] == ["/bin/sh", "-xc"]
    assert c["Cmd"] == ["/bin/sh", "-xc", "echo shell-cmd"]
    assert c["Healthcheck"] == {"Test": ["NONE"]}


def test_expose_checks_ports_after_expansion(aishell, base_ref):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\nARG P=8080/UDP\nEXPOSE $P\nENV Q=notaport\n"
                                               "EXPOSE $Q\n"})
    r = build(aishell, ctx, check=False)
    assert_one_error(r, r"\[5/5\] EXPOSE \$Q .*EXPOSE: invalid port specification: notaport")
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\nARG P=8080/UDP\nEXPOSE $P\n"}, name="ok")
    build(aishell, ctx, "-t", "expose:1")
    assert config_of(aishell, "expose:1")["ExposedPorts"] == {"8080/udp": {}}


# --- --label -----------------------------------------------------------------------------------------
LABEL_DOCKERFILE = """\
FROM {base}
LABEL a=1
RUN echo hi > /x
"""


def test_label_flag_sets_config_labels_after_the_dockerfiles_and_keeps_the_cache(aishell, base_ref):
    # As `docker build --label` with BuildKit (checked against dockerd 20.10): the labels land in
    # the final config over the Dockerfile's own, with no history entry and no step, so a rebuild
    # with other labels is a new image made from the cached steps.
    ctx = make_context(aishell, {"Dockerfile": LABEL_DOCKERFILE.format(base=base_ref)})
    plain = build(aishell, ctx, "-t", "label:0")
    first = build(aishell, ctx, "--label", "x=1", "--label", "a=2", "--label", "bare", "-t", "label:1")
    second = build(aishell, ctx, "--label", "x=2", "--label", "x=3=3", "-t", "label:2")
    _, c0 = manifest_and_config(aishell.store, "label:0")
    m1, c1 = manifest_and_config(aishell.store, "label:1")
    m2, c2 = manifest_and_config(aishell.store, "label:2")
    assert c0["config"]["Labels"] == {"a": "1"}
    assert c1["config"]["Labels"] == {"a": "2", "x": "1", "bare": ""}
    assert c2["config"]["Labels"] == {"a": "1", "x": "3=3"}
    assert c1["history"] == c0["history"] and c2["history"] == c0["history"]
    assert m1["layers"] == m2["layers"]
    assert len({image_id(plain), image_id(first), image_id(second)}) == 3
    assert [l.split(" ")[0] for l in step_lines(second.stderr)] == ["[1/3]", "CACHED", "CACHED"], second.stderr


def test_label_flag_with_an_empty_name_is_refused(aishell, base_ref):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\n"})
    r = build(aishell, ctx, "--label", "=v", check=False)
    assert_one_error(r, r'invalid --label "=v": the name is empty')


# --- output -----------------------------------------------------------------------------------------
def test_quiet_prints_only_the_image_id(aishell, base_ref):
    aishell("pull", base_ref, user="unpriv")
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\nRUN echo run-output-here\nLABEL q=1\n"})
    r = build(aishell, ctx, "--quiet", "-t", "quiet:1")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", r.stdout), r.stdout
    assert r.stdout.strip() == manifest_and_config(aishell.store, "quiet:1")[0]["config"]["digest"]
    assert "run-output-here" not in r.stdout + r.stderr
    assert not step_lines(r.stderr) and "tagged" not in r.stderr, r.stderr
    assert r.stderr == "", r.stderr


def test_quiet_build_that_pulls_its_base_prints_only_the_id(aishell, base_ref):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\nLABEL q=2\n"})
    r = build(aishell, ctx, "-q")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", r.stdout), r.stdout
    assert r.stderr == "", r.stderr


def test_progress_plain_lines(aishell, base_ref):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\nCOPY f /f\nRUN echo streamed-output\nENV X=1\n",
                                 "f": "f\n"})
    r = build(aishell, ctx, "--progress=plain", "-t", "plain:1")
    lines = step_lines(r.stderr)
    assert [re.sub(r"^(CACHED )?\[(\d+)/(\d+)\] (\S+).*", r"\2/\3 \4", l) for l in lines] == \
        ["1/4 FROM", "2/4 COPY", "3/4 RUN", "4/4 ENV"], r.stderr
    assert lines[0] == f"[1/4] FROM {base_ref}"
    assert lines[2] == "[3/4] RUN /bin/sh -c echo streamed-output"
    # RUN output is shown, after its step line and before the next one.
    err = r.stderr.splitlines()
    out_at = [i for i, l in enumerate(err) if "streamed-output" in l and not l.startswith("[")]
    assert out_at or "streamed-output" in r.stdout, r.stdout + r.stderr
    if out_at:
        assert err.index(lines[2]) < out_at[0] < err.index(lines[3])
    assert r.stdout.strip().splitlines()[-1] == image_id(r)
    again = build(aishell, ctx, "--progress=plain", "-t", "plain:2")
    assert [l.split(" ")[0] for l in step_lines(again.stderr)] == ["[1/4]", "CACHED", "CACHED", "CACHED"]


def test_two_tags_name_the_same_image(aishell, base_ref):
    ctx = make_context(aishell, {"Dockerfile": f"FROM {base_ref}\nLABEL t=2\n"})
    r = build(aishell, ctx, "-t", "first:1", "--tag", "second/name:2")
    store = aishell.store
    assert index_digest(store, "first:1") == index_digest(store, "second/name:2")
    assert manifest_and_config(store, "first:1")[0]["config"]["digest"] == image_id(r)
    assert "tagged first:1" in r.stderr and "tagged second/name:2" in r.stderr, r.stderr
    listed = aishell("images", user="unpriv").stdout
    assert "first" in listed and "second/name" in listed, listed
