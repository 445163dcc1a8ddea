"""aishell push: an image built by aishell, pushed to Debian's docker-registry.

- Each registry mode (plain HTTP, TLS with its CA in certs.d, htpasswd Basic, token auth): the
  pushed image is what skopeo inspects and copies, and what another user's store pulls: the same
  manifest digest.
- How blobs travel, read from the registry's access log (one line per request): a config and
  small layers in one PUT, a layer over the 1 MiB threshold streamed in one PATCH, every layer
  over --chunk-size in Content-Range chunks (and streamed when the registry refuses a chunk), a
  push to a second repository mounting every blob instead of uploading it (from the repository
  the first push or a pull recorded), a push of what the registry has uploading nothing.
- A push cut off midway (the fault proxy resets the big layer's PATCH every time) fails with the
  tag unwritten; repeated, it completes uploading only what the registry did not get.
- The team flow of docs/usage.md: a base pushed by one user is another store's foundation
  (`setup --foundation REF`), aishell:foundation and aishell:base at the pushed digest.
- Uploads on another authority (helpers/upload_front.py): an upload session's Location, or a
  307, naming a storage host; the push follows them, with no Authorization header there.
- An upload Location from https to plain http on a non-loopback address of this host:
  refused, as pull refuses such a redirect; allowed with --tls-verify=false.
- SIGINT while the storage holds the big layer's PATCH: 130, one line, no tag, the store as it
  was.
- Errors: a wrong password, a name not in the store, a registry that is down, a local name
  without a destination, a --chunk-size that is not a size or does not fit: one
  `aishell: error:` line each, text checked.

The image (rt-busybox plus a small and a 1.5 MiB random layer) is built once per module by the
unprivileged user."""
import os
import re
import signal
import subprocess
import time
import urllib.parse

import pytest

from helpers.build import make_context, module_runner
from helpers.checks import assert_one_error
from helpers.registry import start_registry
from helpers.runtime_images import ensure_runtime_images
from helpers.store import diff_snapshots, read_blob
from helpers.store import snapshot as store_snapshot
from helpers.upload_front import UploadFront

MONOLITHIC_MAX = 1024 * 1024  # registry/push.hpp kMonolithicUploadMax
NAME = "pushme:1"


@pytest.fixture(scope="module")
def built(session_dir, _binary_checked, unpriv_user):
    """(runner, manifest digest, {blob digest: size}, the big layer's digest) of NAME in
    runner.store. rt-busybox's own layer may be over the threshold too."""
    rt = ensure_runtime_images()
    base = start_registry("http", base_dir=session_dir)
    rt.push(rt.busybox, base, "busybox:latest")
    runner = module_runner(session_dir, _binary_checked, unpriv_user, "push")
    ctx = make_context(runner, {
        "Dockerfile": f"FROM {base.host}/busybox:latest\nCOPY small.txt /small.txt\nCOPY big.bin /big.bin\n",
        "small.txt": "a small layer\n",
        "big.bin": os.urandom(MONOLITHIC_MAX * 3 // 2),  # random: gzip keeps it over the threshold
    })
    runner("build", "-t", NAME, ctx, user="unpriv", env={"AISHELL_USERNS": "subuid"}, timeout=300)
    base.stop()
    manifest = local_manifest(runner.store, NAME)
    blobs = {manifest["config"]["digest"]: manifest["config"]["size"]}
    blobs.update({layer["digest"]: layer["size"] for layer in manifest["layers"]})
    big = manifest["layers"][-1]["digest"]
    assert blobs[big] > MONOLITHIC_MAX, blobs
    return runner, local_digest(runner.store, NAME), blobs, big


def local_digest(store, name):
    import json
    with open(os.path.join(store, "oci", "index.json")) as f:
        for m in json.load(f)["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
                return m["digest"]
    raise KeyError(name)


def local_manifest(store, name):
    import json
    return json.loads(read_blob(store, local_digest(store, name)))


def login(runner, reg):
    if reg.tls:
        runner.install_ca(reg)
    if reg.username:
        runner("login", reg.host, "-u", reg.username, "--password-stdin", input=reg.password,
               user="unpriv")


def push(runner, *args, check=True, env=None):
    return runner("push", *args, user="unpriv", check=check, env=env, timeout=180)


def root_store(runner, tag):
    return os.path.join(runner.workdir, f"root-store-{tag}")  # made by aishell, owned by root


def uploads(reg_or_requests):
    """{digest: [methods of the upload session that ended with PUT ?digest=]} for sessions that
    completed (201), from the registry's access log or the fault proxy's request log."""
    requests = reg_or_requests
    sessions = {}
    for method, path, status in requests:
        m = re.match(r"/v2/.+/blobs/uploads/([0-9a-f-]{36})(\?.*)?$", path)
        if m:
            sessions.setdefault(m.group(1), []).append((method, path, status))
    done = {}
    for steps in sessions.values():
        for method, path, status in steps:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            if method == "PUT" and status == 201 and "digest" in query:
                done.setdefault(query["digest"][0], []).append([s[0] for s in steps])
    return done


def mounts(requests):
    """Digests the registry mounted (POST ?mount= answered 201), with their source repository."""
    out = {}
    for method, path, status in requests:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        if method == "POST" and "mount" in query and status == 201:
            out[query["mount"][0]] = query["from"][0]
    return out


# --- each registry mode ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["http", "tls", "htpasswd", "token"])
def test_push_then_skopeo_and_another_users_store_see_the_same_digest(built, registry, mode, tmp_path):
    runner, digest, blobs, _ = built
    reg = registry(mode)
    login(runner, reg)
    ref = f"{reg.host}/team/app:1"
    proc = push(runner, NAME, ref)
    assert proc.stdout == f"Pushed {ref}\nDigest: {digest}\n"
    assert f"Pushing {ref}" in proc.stderr

    body, served_digest, content_type = reg.get_manifest("team/app", "1")
    assert served_digest == digest
    assert body == read_blob(runner.store, digest)  # the manifest's exact bytes

    skopeo = ["skopeo", "inspect", "--raw"] + [a.replace("--src-", "--") for a in reg.skopeo_src_args()]
    out = subprocess.run(skopeo + [f"docker://{ref}"], capture_output=True, check=True)
    assert out.stdout == body
    copy = ["skopeo", "copy", "--preserve-digests"] + reg.skopeo_src_args() + [
        f"docker://{ref}", f"oci:{tmp_path}/copy:app"]
    subprocess.run(copy, capture_output=True, check=True)

    # Root, with a store of its own, pulls it (the same HOME: auth file and certs.d).
    store = root_store(runner, mode)
    pulled = runner("pull", ref, env={"AISHELL_STORE": store})
    assert f"Digest: {digest}" in pulled.stdout
    assert local_digest(store, ref) == digest


# --- how blobs travel -------------------------------------------------------------------------
def test_small_blobs_in_one_put_a_large_one_streamed(built, registry):
    runner, digest, blobs, big = built
    reg = registry("http", access_log=True)
    push(runner, NAME, f"{reg.host}/team/app:1")
    done = uploads(reg.requests())
    assert set(done) == set(blobs)
    for d, sessions in done.items():
        # After the POST: one PATCH with the whole blob, then PUT ?digest=, for a layer over
        # the threshold; PUT ?digest= with the body for the others.
        expected = ["PATCH", "PUT"] if blobs[d] > MONOLITHIC_MAX else ["PUT"]
        assert sessions == [expected], (d, blobs[d], sessions)
    assert done[big] == [["PATCH", "PUT"]]
    assert ("PUT", "/v2/team/app/manifests/1", 201) == reg.requests()[-1]  # the manifest last


def test_chunk_size_uploads_in_content_range_chunks(built, registry):
    runner, digest, blobs, big = built
    reg = registry("http", access_log=True)
    chunk = 256 * 1024
    push(runner, NAME, f"{reg.host}/team/app:1", "--chunk-size", "256k")
    done = uploads(reg.requests())
    for d, sessions in done.items():
        patches = -(-blobs[d] // chunk) if blobs[d] > chunk else 0
        assert sessions == [["PATCH"] * patches + ["PUT"]], (d, sessions)
    assert reg.get_manifest("team/app", "1")[1] == digest


def test_chunks_refused_are_streamed(built, registry, fault_proxy):
    runner, digest, blobs, big = built
    reg = registry("http", access_log=True)
    proxy = fault_proxy(reg.host)
    proxy.respond(r"/blobs/uploads/", 416, method="PATCH",
                  body='{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"no chunks here"}]}')
    proc = push(runner, NAME, f"{proxy.host}/team/app:1", "--chunk-size", "256k")
    assert "the registry refused a chunk (HTTP 416 range not satisfiable (no chunks here)); " \
           "streaming the blobs instead" in proc.stderr
    # The refused PATCH never reached the registry; its blob went again, in one PATCH.
    done = uploads(reg.requests())
    assert ["PATCH", "PUT"] in [s for d, sessions in done.items() if blobs[d] > 256 * 1024 for s in sessions]
    refused = [r for r in proxy.requests_matching(r"/blobs/uploads/", method="PATCH") if r.fault]
    assert len(refused) == 1 and refused[0].headers["content-range"] == f"0-{256 * 1024 - 1}"
    assert reg.get_manifest("team/app", "1")[1] == digest


@pytest.mark.parametrize("mode", ["http", "token"])
def test_second_repository_mounts_blobs_recorded_by_a_push_and_by_a_pull(built, registry, mode):
    runner, digest, blobs, big = built
    reg = registry(mode, access_log=True)
    login(runner, reg)
    push(runner, NAME, f"{reg.host}/team/a:1")
    first = len(reg.requests())
    push(runner, NAME, f"{reg.host}/team/b:1")
    second = reg.requests()[first:]
    assert mounts(second) == {d: "team/a" for d in blobs}
    assert uploads(second) == {}
    assert reg.get_manifest("team/b", "1")[1] == digest

    # Root pulls team/a into its own store (recording team/a as each blob's source) and pushes
    # it to team/c: mounted too. Its name names the registry, so no destination is needed to
    # push it back to team/a, where every blob is found present.
    store = root_store(runner, "mount-" + mode)
    env = {"AISHELL_STORE": store}
    runner("pull", f"{reg.host}/team/a:1", env=env)
    assert os.path.isfile(os.path.join(store, "sources", big.split(":")[1]))
    mark = len(reg.requests())
    runner("push", f"{reg.host}/team/a:1", f"{reg.host}/team/c:1", env=env)
    third = reg.requests()[mark:]
    assert mounts(third) == {d: "team/a" for d in blobs}
    mark = len(reg.requests())
    proc = runner("push", f"{reg.host}/team/a:1", env=env)
    assert proc.stdout.startswith(f"Pushed {reg.host}/team/a:1\n")
    fourth = reg.requests()[mark:]
    assert uploads(fourth) == {} and mounts(fourth) == {}
    assert sum(1 for m, p, s in fourth if m == "HEAD" and s == 200) == len(blobs)


def test_cut_push_fails_without_a_tag_and_the_rerun_uploads_only_what_is_missing(built, registry,
                                                                                  fault_proxy):
    runner, digest, blobs, big = built
    reg = registry("http")
    proxy = fault_proxy(reg.host)
    # Every PATCH (only layers over the threshold are streamed) is cut after 64 KiB, retries
    # included.
    proxy.cut_request(r"/blobs/uploads/", 64 * 1024, method="PATCH", times=100)
    ref = f"{proxy.host}/team/app:1"
    proc = push(runner, NAME, ref, check=False)
    line = assert_one_error(proc)
    assert re.match(rf"aishell: error: push {NAME} to {ref}: blob sha256:[0-9a-f]{{12}}: PATCH "
                    rf"http://{proxy.host}/v2/team/app/blobs/uploads/[0-9a-f-]{{36}}\?_state=\S+: ", line), line
    assert reg.request("GET", "/v2/team/app/manifests/1")[0] == 404  # no tag
    first = [(r.method, r.path, r.status) for r in proxy.requests]
    done_first = uploads(first)
    assert big not in done_first

    proxy.clear()
    mark = len(proxy.requests)
    push(runner, NAME, ref)
    rerun = [(r.method, r.path, r.status) for r in proxy.requests[mark:]]
    done_second = uploads(rerun)
    assert set(done_first) | set(done_second) == set(blobs)
    assert not set(done_first) & set(done_second)  # nothing uploaded twice
    for d in done_first:
        assert ("HEAD", f"/v2/team/app/blobs/{d}", 200) in rerun
    assert reg.get_manifest("team/app", "1")[1] == digest


# --- the team flow (docs/usage.md "Sharing a base with your team") --------------------------
def test_a_pushed_base_is_a_teammates_foundation(built, registry):
    # The unprivileged user pushes the base over TLS; root, with a store of its own (the
    # teammate), runs `setup --foundation` with that reference: its aishell:foundation and
    # aishell:base (no ~/.aishell/Dockerfile: the foundation's alias) are the pushed manifest.
    runner, digest, _, _ = built
    reg = registry("tls")
    login(runner, reg)
    ref = f"{reg.host}/team/base:2026-12"
    push(runner, NAME, ref)
    store = root_store(runner, "team")
    r = runner("setup", "--foundation", ref, env={"AISHELL_STORE": store}, timeout=180)
    assert f"Foundation: {ref} ({digest})" in r.stdout, r.stdout
    assert "Base image: default (foundation alias)" in r.stdout
    assert local_digest(store, "aishell:foundation") == digest
    assert local_digest(store, "aishell:base") == digest


# --- errors -------------------------------------------------------------------------------------
def test_wrong_password(built, registry):
    runner, *_ = built
    reg = registry("htpasswd")
    runner.write_home_file(".docker/config.json",
                           '{"auths": {"%s": {"auth": "%s"}}}' % (
                               reg.host, __import__("base64").b64encode(b"alice:wrong").decode()))
    proc = push(runner, NAME, f"{reg.host}/team/app:1", check=False)
    assert assert_one_error(proc) == (
        f"aishell: error: push {NAME} to {reg.host}/team/app:1: GET http://{reg.host}/v2/: HTTP 401 "
        f"unauthorized (authentication required) (hint: check the credentials stored for {reg.host} "
        f"(aishell login {reg.host}))")
    os.remove(os.path.join(runner.home, ".docker", "config.json"))


def test_unknown_name(built, registry):
    runner, *_ = built
    proc = push(runner, "nosuch:1", "127.0.0.1:1/team/app:1", check=False)
    assert assert_one_error(proc) == (
        "aishell: error: push nosuch:1: no such image in the store: nosuch:1 (hint: aishell images "
        "lists them; aishell pull nosuch:1 fetches it)")


def test_registry_down(built, registry):
    runner, *_ = built
    reg = registry("http")
    reg.stop()
    proc = push(runner, NAME, f"{reg.host}/team/app:1", check=False)
    assert assert_one_error(proc) == (
        f"aishell: error: push {NAME} to {reg.host}/team/app:1: GET http://{reg.host}/v2/: "
        f"Couldn't connect to server")


def test_a_local_name_needs_a_destination(built):
    runner, *_ = built
    proc = push(runner, NAME, check=False)
    assert assert_one_error(proc) == (
        f"aishell: error: push {NAME}: the name has no registry to push to (hint: give the "
        f"destination: aishell push {NAME} REGISTRY/REPOSITORY[:TAG])")


@pytest.mark.parametrize("size, line", [
    ("5x", 'aishell: error: --chunk-size "5x" is not a size (hint: a number of bytes, or with a unit: 512k, 5m, 1g)'),
    ("99999999999999999999", 'aishell: error: --chunk-size "99999999999999999999" is out of range (1 byte to 4 EiB) '
                             '(hint: a number of bytes, or with a unit: 512k, 5m, 1g)'),
])
def test_a_bad_chunk_size_is_one_line_naming_the_flag(aishell, size, line):
    proc = aishell("push", NAME, "127.0.0.1:1/team/app:1", "--chunk-size", size, user="unpriv", check=False)
    assert assert_one_error(proc) == line
    assert proc.returncode == 1


# --- uploads sent to another authority ------------------------------------------------------
@pytest.mark.parametrize("how", ["location", "redirect"])
def test_uploads_on_another_authority_get_no_credentials(built, registry, session_dir, how):
    # An htpasswd registry over TLS whose upload sessions live on a storage host (another port,
    # so another authority, and plain HTTP: a downgrade to loopback, allowed): named by the
    # upload's Location, or reached by a 307 from the registry. The push follows both, and the
    # credentials go only to the registry (scheme, host and port), never to the storage.
    runner, digest, blobs, big = built
    reg = registry("htpasswd", tls=True)
    front = UploadFront(reg, how, workdir=session_dir)
    try:
        runner.install_ca(front)
        runner("login", front.host, "-u", reg.username, "--password-stdin", input=reg.password, user="unpriv")
        ref = f"{front.host}/team/app:1"
        proc = push(runner, NAME, ref)
        assert proc.stdout == f"Pushed {ref}\nDigest: {digest}\n"
        assert reg.get_manifest("team/app", "1")[1] == digest
        # Every blob's bytes went to the storage, without an Authorization header.
        sent = {urllib.parse.parse_qs(urllib.parse.urlsplit(p).query).get("digest", [None])[0]
                for m, p, _ in front.storage_requests if m == "PUT"}
        assert set(blobs) <= sent, (sent, front.storage_requests)
        assert any(m == "PATCH" for m, _, _ in front.storage_requests)  # the big layer, streamed
        for method, path, headers in front.storage_requests:
            assert "authorization" not in headers, f"{method} {path} on the storage: {headers}"
        # ... while the registry's own requests carried them.
        assert all("authorization" in h for m, p, h in front.front_requests
                   if m in ("POST", "PUT", "HEAD") and p.startswith("/v2/team/")), front.front_requests
        if how == "redirect":
            assert any(m in ("PATCH", "PUT") and "/blobs/uploads/" in p for m, p, _ in front.front_requests)
    finally:
        front.stop()


def test_sigint_mid_upload_leaves_no_tag_and_the_store_unchanged(built, registry, session_dir):
    # The storage holds the big layer's PATCH unanswered: the push is mid-upload when the
    # Ctrl-C comes. It stops (130, one line), the manifest is never PUT, and the store is as
    # it was (its lease gone, no blob source recorded).
    runner, digest, blobs, big = built
    reg = registry("http")
    front = UploadFront(reg, "location", workdir=session_dir, hold_patches=True)
    try:
        runner.install_ca(front)
        before = store_snapshot(runner.store, ignore_top=("lock",))
        ref = f"{front.host}/team/app:1"
        proc = runner.popen("push", NAME, ref, user="unpriv")
        deadline = time.monotonic() + 120
        while not any(m == "PATCH" for m, _, _ in front.storage_requests) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition: the PATCH's body at the storage
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        front.stop()
    assert proc.returncode == 130, err
    assert out == ""
    assert err.endswith(f"aishell: error: push {NAME} to {ref}: interrupted; the tag was not written "
                        "(hint: run the push again: blobs the registry has already are not sent again)\n") \
        and err.count("aishell: error:") == 1, err
    assert reg.request("GET", "/v2/team/app/manifests/1")[0] == 404
    assert not any(m == "PUT" and "/manifests/" in p for m, p, _ in front.front_requests)
    assert diff_snapshots(before, store_snapshot(runner.store, ignore_top=("lock",))) == ""


def _non_loopback_address():
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[1] != "lo" and not fields[3].startswith("127."):
            return fields[3].split("/")[0]
    return None


def test_an_upload_location_from_https_to_plain_http_is_refused(built, registry, session_dir):
    # The registry (over TLS, at a non-loopback address of this host) names a plain-HTTP upload
    # URL on another non-loopback authority: the blob would cross the network in clear. Refused
    # as pull refuses such a redirect; --tls-verify=false lets it through.
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to stand for a remote registry")
    runner, digest, blobs, big = built
    reg = registry("http")
    front = UploadFront(reg, "location", workdir=session_dir, address=address)
    try:
        runner.install_ca(front)
        ref = f"{front.host}/team/app:1"
        proc = push(runner, NAME, ref, check=False)
        line = assert_one_error(proc)
        assert f"refusing a redirect from https://{front.host}/v2/team/app/blobs/uploads/ to plain HTTP " \
               f"http://{front.storage_host}/v2/team/app/blobs/uploads/" in line, line
        assert front.storage_requests == []
        assert reg.request("GET", "/v2/team/app/manifests/1")[0] == 404
        push(runner, NAME, ref, "--tls-verify=false")
        assert any(m == "PUT" for m, _, _ in front.storage_requests)
        assert reg.get_manifest("team/app", "1")[1] == digest
    finally:
        front.stop()
