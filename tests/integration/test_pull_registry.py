"""aishell pull against the real registry: plain HTTP, HTTPS with a CA in certs.d, Docker
schema2, multi-platform indexes with attestations, digests, output modes. Every result is
checked with independent tools (skopeo inspect, umoci unpack) and by re-hashing the store."""
import json
import os

import pytest

from helpers.checks import (DOCKER_MANIFEST, assert_one_error, assert_pulled, entry,
                            largest_layer)
from helpers.store import blob_path, image_names, read_blob
from helpers.util import sha256_file

USERS = ["root", "unpriv"]


@pytest.mark.parametrize("user", USERS)
def test_pull_plain_http_from_loopback(aishell, registry, images, user, tmp_path):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell("pull", ref, user=user)
    manifest = assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox),
                             tmp_path=tmp_path)
    layer = manifest["layers"][0]
    assert sha256_file(blob_path(aishell.store, layer["digest"])) == layer["digest"]
    rootfs = tmp_path / "bundle" / "rootfs"
    assert sha256_file(rootfs / "bin" / "busybox") == sha256_file("/bin/busybox")


def test_pull_twice_downloads_no_blob_again(aishell, registry, images, fault_proxy):
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    proxy = fault_proxy(reg.host)
    ref = f"{proxy.host}/lib/busybox:1"
    aishell("pull", ref, user="unpriv")
    first = len(proxy.requests_matching(r"/blobs/", method="GET"))
    assert first >= 3  # config and two layers
    aishell("pull", ref, user="unpriv")
    assert len(proxy.requests_matching(r"/blobs/", method="GET")) == first
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_pull_by_digest(aishell, registry, images):
    reg = registry("http")
    images.push(images.busybox, reg, "lib/busybox:1")
    digest = images.manifest_digest(images.busybox)
    ref = f"{reg.host}/lib/busybox@{digest}"
    aishell("pull", ref, user="unpriv")
    assert_pulled(aishell.store, ref, digest)


@pytest.mark.parametrize("user", USERS)
def test_pull_https_with_ca_in_certs_d(aishell, registry, images, user, tmp_path):
    reg = registry("tls")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    failed = aishell("pull", ref, user=user, check=False)
    assert_one_error(failed, r"certificate|tls|ssl|verif")
    assert ref not in _names(aishell.store)
    aishell.install_ca(reg)
    aishell("pull", ref, user=user)
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox), tmp_path=tmp_path)


def test_pull_https_tls_verify_false_skips_verification(aishell, registry, images):
    reg = registry("tls")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell("pull", "--tls-verify=false", ref, user="unpriv")
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


@pytest.mark.parametrize("user", USERS)
def test_docker_schema2_stays_schema2_byte_for_byte(aishell, registry, images, user):
    reg = registry("http")
    ref = images.push(images.busybox_v2s2, reg, "lib/busybox-v2:1")
    served, served_digest, content_type = reg.get_manifest("lib/busybox-v2", "1")
    assert content_type == DOCKER_MANIFEST
    aishell("pull", ref, user=user)
    # skopeo 1.9 and umoci 0.4.7 read no Docker schema2 from an OCI layout, so the check is the
    # bytes themselves: same digest as the registry's, same bytes, Docker media type kept.
    desc = entry(aishell.store, ref)
    assert desc["digest"] == served_digest == images.manifest_digest(images.busybox_v2s2)
    assert desc["mediaType"] == DOCKER_MANIFEST
    assert read_blob(aishell.store, served_digest) == served
    manifest = json.loads(served)
    for d in [manifest["config"]] + manifest["layers"]:
        assert sha256_file(blob_path(aishell.store, d["digest"])) == d["digest"]
    info = json.loads(aishell("inspect", ref, user=user).stdout)
    assert info["Digest"] == served_digest


@pytest.mark.parametrize("user", USERS)
def test_multi_platform_index_picks_host_and_passes_over_attestation(aishell, registry, images,
                                                                     user, tmp_path):
    reg = registry("http")
    ref = images.push(images.multi, reg, "lib/multi:1")
    aishell("pull", ref, user=user)
    host_digest = images.platform_digests[f"linux/{images.host_arch}"]
    assert_pulled(aishell.store, ref, host_digest, tmp_path=tmp_path)
    index = json.loads(reg.get_manifest("lib/multi", "1")[0])
    attestation = index["manifests"][2]
    other = images.platform_digests[f"linux/{images.other_arch}"]
    # Neither the attestation nor the other platform was fetched.
    for digest in (attestation["digest"], other):
        assert not _has_blob(aishell.store, digest), f"{digest} should not have been pulled"


def test_multi_platform_index_with_platform_flag(aishell, registry, images, tmp_path):
    reg = registry("http")
    ref = images.push(images.multi, reg, "lib/multi:1")
    aishell("pull", "--platform", f"linux/{images.other_arch}", ref, user="unpriv")
    other = images.platform_digests[f"linux/{images.other_arch}"]
    desc = entry(aishell.store, ref)
    assert desc["digest"] == other
    config = json.loads(read_blob(aishell.store, json.loads(
        read_blob(aishell.store, other))["config"]["digest"]))
    assert config["architecture"] == images.other_arch
    assert not _has_blob(aishell.store, images.platform_digests[f"linux/{images.host_arch}"])


def test_platform_not_in_index_is_a_clear_error(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.multi, reg, "lib/multi:1")
    proc = aishell("pull", "--platform", "linux/s390x", ref, user="unpriv", check=False)
    assert_one_error(proc, r"s390x|platform")


def test_quiet_pull_prints_nothing(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    proc = aishell("pull", "--quiet", ref, user="unpriv")
    assert proc.stdout == "" and proc.stderr == ""


def test_progress_without_terminal_is_plain_lines(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    proc = aishell("pull", ref, user="unpriv")
    assert proc.stderr.strip(), "a pull without --quiet reports progress as plain lines"
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr


def test_images_json_and_inspect_after_pull(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell("pull", ref, user="unpriv")
    digest = images.manifest_digest(images.busybox)
    rows = json.loads(aishell("images", "--json", user="unpriv").stdout)
    assert [(r["name"], r["digest"]) for r in rows] == [(ref, digest)]
    info = json.loads(aishell("inspect", ref, user="unpriv").stdout)
    manifest = json.loads(read_blob(aishell.store, digest))
    assert info["Digest"] == digest
    assert info["Id"] == manifest["config"]["digest"]
    assert [layer["digest"] for layer in info["Layers"]] == [
        d["digest"] for d in manifest["layers"]]
    assert info["Architecture"] == images.host_arch
    assert info["Config"]["Cmd"] == ["sh"]
    assert info["Size"] >= largest_layer(manifest)["size"]


def test_malformed_reference_is_rejected(aishell):
    for bad in ["UPPER/case:1", "127.0.0.1:5000/repo:tag:extra", "repo@sha256:123",
                "", "repo:-bad"]:
        proc = aishell("pull", bad, user="unpriv", check=False)
        assert_one_error(proc, r"reference|invalid|malformed")


def _has_blob(store, digest):
    return os.path.exists(blob_path(store, digest))


def _names(store):
    if not os.path.exists(os.path.join(store, "oci", "index.json")):
        return {}
    return image_names(store)
