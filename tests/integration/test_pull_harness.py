"""Self-checks of the test harness: the registries, token issuer, proxy and fixtures really
behave as the pull tests assume (so a pull test cannot pass against a harness that lets
everything through). No aishell binary is involved."""
import json
import subprocess
import urllib.request

import pytest

from helpers.store import snapshot
from helpers.util import run, sha256_bytes


def test_fixture_images_are_valid_for_independent_tools(images, tmp_path):
    for ref in (images.busybox, images.hello, images.busybox_other):
        out = run(["skopeo", "inspect", ref]).stdout
        assert json.loads(out)["Os"] == "linux"
    bundle = tmp_path / "bundle"
    run(["umoci", "unpack", "--rootless", "--image", images.busybox.removeprefix("oci:"),
         str(bundle)])
    assert (bundle / "rootfs/bin/busybox").is_file()
    assert (bundle / "rootfs/bin/sh").is_symlink()
    raw = run(["skopeo", "inspect", "--raw", images.busybox_v2s2]).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_multi_index_has_two_platforms_and_an_attestation(images):
    raw = run(["skopeo", "inspect", "--raw", images.multi]).stdout
    index = json.loads(raw)
    platforms = [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]]
    assert platforms == [("linux", images.host_arch), ("linux", images.other_arch),
                         ("unknown", "unknown")]
    att = index["manifests"][2]
    assert att["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"


@pytest.mark.parametrize("mode", ["http", "tls", "htpasswd", "token"])
def test_push_keeps_manifest_digests(registry, images, mode):
    reg = registry(mode)
    for ref, repo in ((images.busybox, "lib/busybox"), (images.busybox_v2s2, "v2/busybox"),
                      (images.multi, "lib/multi")):
        images.push(ref, reg, f"{repo}:1")
        body, digest, _ = reg.get_manifest(repo, "1")
        assert sha256_bytes(body) == digest == images.manifest_digest(ref)


def test_htpasswd_registry_rejects_anonymous_and_bad_password(registry):
    reg = registry("htpasswd")
    assert reg.request("GET", "/v2/")[0] == 401
    status, _, _ = reg.request("GET", "/v2/", headers={
        "Authorization": "Basic YWxpY2U6d3Jvbmc="})  # alice:wrong
    assert status == 401


def test_token_issuer_checks_password_and_scope(registry, images):
    reg = registry("token")
    images.push(images.hello, reg, "public/hello:1")
    images.push(images.hello, reg, "restricted/hello:1")
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    # Wrong password: the issuer answers 401.
    req = urllib.request.Request(f"{reg.issuer.realm}?service=aishell-test-registry&scope="
                                 f"repository:public/hello:pull")
    req.add_header("Authorization", "Basic YWxpY2U6d3Jvbmc=")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 401
    # A token for repo A does not open repo B.
    token = reg._auth_header("public/hello", "pull", admin=False)
    assert reg.request("GET", "/v2/public/hello/manifests/1",
                       headers={"Authorization": token, **accept})[0] == 200
    assert reg.request("GET", "/v2/restricted/hello/manifests/1",
                       headers={"Authorization": token, **accept})[0] == 401
    # alice is never granted restricted/*.
    assert reg.request("GET", "/v2/restricted/hello/manifests/1", repo="restricted/hello",
                       admin=False, headers=accept)[0] == 401


def test_fault_proxy_cuts_and_answers_429(registry, images, fault_proxy):
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    proxy = fault_proxy(reg.host)
    proxy.respond(r"/manifests/", 429, headers={"Retry-After": "1"})
    proxy.cut_after(r"/blobs/", 1000)
    url = f"http://{proxy.host}/v2/lib/busybox/manifests/1"
    req = urllib.request.Request(url, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 429 and e.value.headers["Retry-After"] == "1"
    manifest = json.loads(urllib.request.urlopen(req).read())
    layer = max(manifest["layers"], key=lambda d: d["size"])
    blob_url = f"http://{proxy.host}/v2/lib/busybox/blobs/{layer['digest']}"
    with pytest.raises(Exception):
        urllib.request.urlopen(blob_url).read()
    data = urllib.request.urlopen(urllib.request.Request(
        blob_url, headers={"Range": "bytes=1000-"})).read()
    assert len(data) == layer["size"] - 1000
    assert proxy.requests_matching(r"/blobs/")[-1].headers.get("range") == "bytes=1000-"


def test_fake_registry_serves_canned_manifest(fake_registry):
    fake = fake_registry()
    fake.add_manifest("broken/json", "1", b"{not json", "application/vnd.oci.image.manifest.v1+json")
    body = urllib.request.urlopen(f"http://{fake.host}/v2/broken/json/manifests/1").read()
    assert body == b"{not json"


def test_unpriv_user_can_reach_per_test_dirs(aishell, unpriv_user):
    from helpers.users import as_user_prefix, check_unpriv_user
    entry = check_unpriv_user(unpriv_user)
    probe = subprocess.run(as_user_prefix(entry) + ["sh", "-c",
                           f"mkdir {aishell.store} && touch {aishell.home}/x && id -u"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(entry.pw_uid)
    assert snapshot(aishell.store) == {}


def test_store_checks_detect_changes_and_corruption(images, tmp_path):
    from helpers.store import diff_snapshots, verify_store
    store = tmp_path / "store"
    store.mkdir()
    run(["skopeo", "copy", "--quiet", images.busybox, f"oci:{store}/oci:busybox"])
    (store / "tmp").mkdir()
    before = snapshot(store)
    assert verify_store(store) == []
    (store / "tmp" / "partial").write_bytes(b"partial download")
    assert diff_snapshots(before, snapshot(store)) == ""  # tmp/ may differ
    blobs = store / "oci" / "blobs" / "sha256"
    victim = max(blobs.iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert f"changed: oci/blobs/sha256/{victim.name}" in diff_snapshots(before, snapshot(store))
    assert any(victim.name in p for p in verify_store(store))
    victim.unlink()
    assert any("missing blob" in p for p in verify_store(store))


def test_fault_proxy_throttles(registry, images, fault_proxy):
    import time
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    proxy = fault_proxy(reg.host)
    proxy.throttle(1_000_000)
    body, _, _ = reg.get_manifest("lib/busybox", "1")
    layer = max(json.loads(body)["layers"], key=lambda d: d["size"])
    start = time.monotonic()
    data = urllib.request.urlopen(
        f"http://{proxy.host}/v2/lib/busybox/blobs/{layer['digest']}").read()
    assert len(data) == layer["size"]
    assert time.monotonic() - start >= layer["size"] / 1_000_000 * 0.8
