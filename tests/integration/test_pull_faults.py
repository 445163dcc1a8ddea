"""Bad input and faults during a pull. Each ends in one `aishell: error:` line and a non-zero
exit (kill -9 aside), and leaves the store's index.json and blobs/ exactly as they were (only
tmp/ may differ: partial downloads stay there for resuming), with every image still verifying.

Each test first pulls a small image so the store has content that must survive."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from helpers.checks import (assert_one_error, assert_pulled, assert_store_unchanged,
                            largest_layer, wait_for)
from helpers.store import snapshot, verify_store
from helpers.util import free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def seeded(aishell, registry, images):
    """A store holding one image (pulled by the unprivileged user) and its snapshot."""
    reg = registry("http")
    ref = images.push(images.hello, reg, "seed/hello:1")
    aishell("pull", ref, user="unpriv")
    assert_pulled(aishell.store, ref, images.manifest_digest(images.hello))

    class Seeded:
        registry = reg
        before = snapshot(aishell.store)

    return Seeded


def exact(message):
    """A pattern matching exactly the line `aishell: error: MESSAGE`."""
    return "^" + re.escape("aishell: error: " + message) + "$"


def pull_fails(aishell, ref, pattern, *flags, user="unpriv", timeout=120):
    proc = aishell("pull", *flags, ref, user=user, check=False, timeout=timeout)
    return assert_one_error(proc, pattern)


def test_unknown_host(aishell, seeded):
    pull_fails(aishell, "no-such-host.invalid:5000/repo:1", exact(
        "pull no-such-host.invalid:5000/repo:1: GET https://no-such-host.invalid:5000/v2/: "
        "Couldn't resolve host name (hint: check the registry name and your network)"))
    assert_store_unchanged(aishell.store, seeded.before)


def test_connection_refused(aishell, seeded):
    host = f"127.0.0.1:{free_port()}"
    pull_fails(aishell, f"{host}/repo:1",
               exact(f"pull {host}/repo:1: GET http://{host}/v2/: Couldn't connect to server"))
    assert_store_unchanged(aishell.store, seeded.before)


def test_401_without_credentials(aishell, seeded, registry, images):
    reg = registry("htpasswd")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    pull_fails(aishell, ref, exact(
        f"pull {ref}: fetch manifest lib/busybox:1: GET http://{reg.host}/v2/lib/busybox/"
        f"manifests/1: HTTP 401 unauthorized (authentication required) (hint: log in first: "
        f"aishell login {reg.host})"))
    assert_store_unchanged(aishell.store, seeded.before)


def test_404_manifest(aishell, seeded):
    host = seeded.registry.host
    pull_fails(aishell, f"{host}/seed/hello:no-such-tag", exact(
        f"pull {host}/seed/hello:no-such-tag: fetch manifest seed/hello:no-such-tag: "
        f"HTTP 404 not found (manifest unknown)"))
    pull_fails(aishell, f"{host}/no/such-repo:1", exact(
        f"pull {host}/no/such-repo:1: fetch manifest no/such-repo:1: "
        f"HTTP 404 not found (manifest unknown)"))
    assert_store_unchanged(aishell.store, seeded.before)


@pytest.mark.parametrize("where", ["manifests", "blobs"])
def test_429_with_retry_after_is_honoured(aishell, seeded, registry, images, fault_proxy, where):
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    proxy = fault_proxy(reg.host)
    proxy.respond(rf"/{where}/", 429, headers={"Retry-After": "2"},
                  body=b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')
    ref = f"{proxy.host}/lib/busybox:1"
    aishell("pull", ref, user="unpriv")
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))
    limited = [r for r in proxy.requests if r.fault == "respond"]
    assert len(limited) == 1
    retry = [r for r in proxy.requests_matching(rf"/{where}/")
             if r.time > limited[0].time and r.path == limited[0].path]
    assert retry, "the request that got 429 was retried"
    assert retry[0].time - limited[0].time >= 1.9, "Retry-After: 2 was not honoured"


def test_503_with_retry_after_is_honoured(aishell, seeded, registry, images, fault_proxy):
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    proxy = fault_proxy(reg.host)
    proxy.respond(r"/blobs/", 503, headers={"Retry-After": "1"})
    ref = f"{proxy.host}/lib/busybox:1"
    aishell("pull", ref, user="unpriv")
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_429_forever_gives_up_with_one_error(aishell, seeded, registry, images, fault_proxy):
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    proxy = fault_proxy(reg.host)
    proxy.respond(r"/manifests/", 429, headers={"Retry-After": "0"}, times=1000)
    pull_fails(aishell, f"{proxy.host}/lib/busybox:1", exact(
        f"pull {proxy.host}/lib/busybox:1: fetch manifest lib/busybox:1: HTTP 429 too many requests"))
    assert_store_unchanged(aishell.store, seeded.before)


@pytest.mark.parametrize("user", ["root", "unpriv"])
def test_corrupted_blob_in_registry_storage(aishell, registry, images, user):
    reg = registry("http")
    seed = images.push(images.hello, reg, "seed/hello:1")
    aishell("pull", seed, user=user)
    before = snapshot(aishell.store)
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    manifest = json.loads(reg.get_manifest("lib/busybox", "1")[0])
    layer = largest_layer(manifest)
    path = reg.blob_data_path(layer["digest"])
    with open(path, "r+b") as f:  # same size, different bytes
        f.seek(layer["size"] // 2)
        byte = f.read(1)
        f.seek(layer["size"] // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    pull_fails(aishell, ref, r"digest|mismatch|verif", user=user)
    assert_store_unchanged(aishell.store, before)
    assert not os.path.exists(os.path.join(aishell.store, "oci", "blobs", "sha256",
                                           layer["digest"].split(":")[1]))


@pytest.mark.parametrize("user", ["root", "unpriv"])
def test_connection_cut_mid_blob_is_resumed_with_range(aishell, registry, images, fault_proxy, user):
    reg = registry("http")
    # Seeded by the user under test: a store is used by its owner only.
    aishell("pull", images.push(images.hello, reg, "seed/hello:1"), user=user)
    before = snapshot(aishell.store)
    images.push(images.busybox, reg, "lib/busybox:1")
    layer = largest_layer(json.loads(reg.get_manifest("lib/busybox", "1")[0]))
    proxy = fault_proxy(reg.host)
    ref = f"{proxy.host}/lib/busybox:1"
    blob = rf"/blobs/{layer['digest']}"
    # The first response is cut after 300 kB, every later one before its first byte, so the
    # in-process retries cannot finish: this pull fails and leaves its partial in tmp/.
    proxy.cut_after(blob, 300_000)
    proxy.cut_after(blob, 0, times=1000)
    pull_fails(aishell, ref, r"blob|connection|transfer|receive|partial", user=user,
               timeout=180)
    assert_store_unchanged(aishell.store, before)
    # The rerun (faults gone) continues from the partial with a Range request.
    proxy.faults.clear()
    count = len(proxy.requests)
    aishell("pull", ref, user=user)
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))
    ranges = [r.headers.get("range", "") for r in proxy.requests[count:]
              if r.path.endswith(layer["digest"]) and r.method == "GET"]
    assert ranges and ranges[0].startswith("bytes="), f"no Range request on rerun: {ranges}"
    start = int(ranges[0].split("=")[1].split("-")[0])
    assert 0 < start <= 300_000


def test_connection_cut_once_is_retried_within_the_pull(aishell, seeded, registry, images,
                                                        fault_proxy):
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    layer = largest_layer(json.loads(reg.get_manifest("lib/busybox", "1")[0]))
    proxy = fault_proxy(reg.host)
    proxy.cut_after(rf"/blobs/{layer['digest']}", 300_000)
    ref = f"{proxy.host}/lib/busybox:1"
    aishell("pull", ref, user="unpriv")
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))
    gets = [r for r in proxy.requests_matching(layer["digest"], method="GET")]
    assert len(gets) >= 2
    assert gets[-1].headers.get("range", "").startswith("bytes="), "the retry resumed"


def test_malformed_manifest_json(aishell, seeded, fake_registry):
    fake = fake_registry()
    fake.add_manifest("bad/json", "1", b'{"schemaVersion": 2, "config": {', OCI_MANIFEST)
    pull_fails(aishell, f"{fake.host}/bad/json:1", r"manifest|json|parse")
    assert_store_unchanged(aishell.store, seeded.before)


def test_manifest_with_invalid_digest_syntax(aishell, seeded, fake_registry):
    fake = fake_registry()
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:xyz", "size": 2},
                       "layers": []})
    fake.add_manifest("bad/digest", "1", body, OCI_MANIFEST)
    pull_fails(aishell, f"{fake.host}/bad/digest:1", r"digest|manifest|invalid")
    assert_store_unchanged(aishell.store, seeded.before)


def test_oversized_manifest(aishell, seeded, fake_registry):
    fake = fake_registry()
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "a" * 64, "size": 2},
                       "layers": [],
                       "annotations": {"padding": "x" * (5 << 20)}})
    fake.add_manifest("big/manifest", "1", body, OCI_MANIFEST)
    pull_fails(aishell, f"{fake.host}/big/manifest:1", r"large|size|exceed|limit|MiB")
    assert_store_unchanged(aishell.store, seeded.before)


def test_schema1_manifest_is_unsupported(aishell, seeded, fake_registry):
    fake = fake_registry()
    body = json.dumps({"schemaVersion": 1, "name": "old/image", "tag": "1",
                       "architecture": "amd64", "fsLayers": [], "history": []})
    fake.add_manifest("old/image", "1", body,
                      "application/vnd.docker.distribution.manifest.v1+prettyjws")
    pull_fails(aishell, f"{fake.host}/old/image:1", r"schema ?1|unsupported")
    assert_store_unchanged(aishell.store, seeded.before)


def _interrupt_mid_pull(aishell, registry, images, fault_proxy, sig, user):
    reg = registry("http")
    seed = images.push(images.hello, reg, "seed/hello:1")
    aishell("pull", seed, user=user)
    before = snapshot(aishell.store)
    images.push(images.busybox, reg, "lib/busybox:1")
    layer = largest_layer(json.loads(reg.get_manifest("lib/busybox", "1")[0]))
    proxy = fault_proxy(reg.host)
    proxy.throttle(100_000)  # ~10 s for the big layer: plenty of time to interrupt
    ref = f"{proxy.host}/lib/busybox:1"
    proc = aishell.popen("pull", ref, user=user)
    try:
        wait_for(lambda: any(r.body_bytes > 50_000
                             for r in proxy.requests_matching(layer["digest"])),
                 what="the big layer to start downloading")
        os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_store_unchanged(aishell.store, before)
    proxy.throttle(None)
    return ref, result


@pytest.mark.parametrize("user", ["root", "unpriv"])
def test_sigint_mid_pull(aishell, registry, images, fault_proxy, user):
    ref, result = _interrupt_mid_pull(aishell, registry, images, fault_proxy, signal.SIGINT,
                                      user)
    assert_one_error(result, r"interrupt|signal|cancel")
    aishell("pull", ref, user=user)
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_kill_9_mid_pull(aishell, registry, images, fault_proxy):
    ref, result = _interrupt_mid_pull(aishell, registry, images, fault_proxy, signal.SIGKILL,
                                      "unpriv")
    assert result.returncode == -signal.SIGKILL
    assert not verify_store(aishell.store)
    aishell("pull", ref, user="unpriv")  # the lock died with the process; the rerun works
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_store_never_shows_a_half_written_blob(aishell, registry, images, fault_proxy):
    """While a slow pull runs, everything under blobs/ already verifies at every instant."""
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    proxy = fault_proxy(reg.host)
    proxy.throttle(400_000)
    proc = aishell.popen("pull", f"{proxy.host}/lib/busybox:1", user="unpriv")
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            problems = verify_store(aishell.store)
            assert not problems, problems
            time.sleep(0.05)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_resumed_blob_that_fails_verification_is_downloaded_again(aishell, seeded, registry,
                                                                      images, fault_proxy):
    # Registry A serves a corrupt copy of the big layer (a byte flipped early) and its
    # connection is cut after 300 kB: the pull fails and leaves a corrupt partial in tmp/.
    bad = registry("http")
    images.push(images.busybox, bad, "lib/busybox:1")
    layer = largest_layer(json.loads(bad.get_manifest("lib/busybox", "1")[0]))
    with open(bad.blob_data_path(layer["digest"]), "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad_proxy = fault_proxy(bad.host)
    blob = rf"/blobs/{layer['digest']}"
    bad_proxy.cut_after(blob, 300_000)
    bad_proxy.cut_after(blob, 0, times=1000)
    pull_fails(aishell, f"{bad_proxy.host}/lib/busybox:1", r"blob|connection|transfer|receive",
               timeout=180)
    assert_store_unchanged(aishell.store, seeded.before)
    # Registry B has the right bytes. Its pull resumes the partial (Range), the result does not
    # verify, and the same pull fetches the blob again from byte 0 and succeeds.
    good = registry("http")
    images.push(images.busybox, good, "lib/busybox:1")
    good_proxy = fault_proxy(good.host)
    proc = aishell("pull", f"{good_proxy.host}/lib/busybox:1", user="unpriv")
    assert_pulled(aishell.store, f"{good_proxy.host}/lib/busybox:1",
                  images.manifest_digest(images.busybox))
    gets = good_proxy.requests_matching(layer["digest"], method="GET")
    ranges = [r.headers.get("range", "") for r in gets]
    assert len(gets) == 2 and ranges[0].startswith("bytes=") and ranges[1] == "", ranges
    assert "did not verify" in proc.stderr and "downloading it again from the start" in proc.stderr
