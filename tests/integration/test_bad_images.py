"""Bad images must not take the store down: a pull checks an image's config before it commits
(digests well formed, one diff_id per layer), JSON nested deeper than aishell's limit is an
error (never a crash), and `aishell images` lists every image, marking a broken one.

The images are made here byte by byte and served by the fake registry (a real registry would
not care either: it never parses a config)."""
import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from helpers.build import make_context
from helpers.checks import assert_one_error, assert_pulled, assert_store_unchanged
from helpers.store import snapshot

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DEEP = 300_000  # the 600 KB config: far past any stack


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello\n"
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()
    return tar, gzip.compress(tar, mtime=0)


def config_bytes(diff_ids, extra=""):
    """The config; extra goes into its "config" object (which inspect and builds copy)."""
    text = json.dumps({"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": diff_ids},
                       "config": {"Cmd": ["/hello.txt"]}})
    return (text[:-2] + extra + "}}").encode()


def image(diff_ids=None, layer_count=1, extra_config=""):
    """(manifest bytes, {digest: blob}) of a one-file image; diff_ids/layer_count bend it."""
    tar, gz = layer_tar()
    config = config_bytes([digest(tar)] if diff_ids is None else diff_ids, extra_config)
    layer = {"mediaType": OCI_LAYER, "digest": digest(gz), "size": len(gz)}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": digest(config),
                                      "size": len(config)},
                           "layers": [layer] * layer_count}).encode()
    return manifest, {digest(config): config, digest(gz): gz}


def serve(fake, repo, manifest, blobs):
    fake.add_manifest(repo, "1", manifest, OCI_MANIFEST, digest=digest(manifest))
    for d, data in blobs.items():
        fake.add_blob(repo, d, data)
    return f"{fake.host}/{repo}:1"


def plant(aishell, name, manifest, blobs):
    """Puts an image into the store as an older aishell (which checked no config) left it:
    blobs and an index.json entry, owned by the store's user."""
    uid, gid = aishell.entry.pw_uid, aishell.entry.pw_gid
    blob_dir = os.path.join(aishell.store, "oci", "blobs", "sha256")
    for data in [manifest, *blobs.values()]:
        path = os.path.join(blob_dir, digest(data).split(":")[1])
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, uid, gid)
    index_path = os.path.join(aishell.store, "oci", "index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": digest(manifest),
                               "size": len(manifest),
                               "annotations": {"org.opencontainers.image.ref.name": name}})
    with open(index_path, "w") as f:
        json.dump(index, f)
    os.chown(index_path, uid, gid)


@pytest.fixture
def good(aishell, fake_registry):
    """A store holding one good image (pulled by the unprivileged user), the fake registry and
    the store's snapshot."""
    fake = fake_registry()
    ref = serve(fake, "good/image", *image())
    aishell("pull", ref, user="unpriv")

    class Good:
        registry = fake
        name = ref
        before = snapshot(aishell.store)

    return Good


def test_pull_refuses_a_config_whose_diff_id_is_a_path(aishell, good):
    ref = serve(good.registry, "bad/diffid", *image(diff_ids=["sha256:../../../../tmp/x"]))
    line = assert_one_error(aishell("pull", ref, user="unpriv", check=False))
    assert 'invalid digest "sha256:../../../../tmp/x"' in line, line
    assert "config sha256:" in line, line
    assert_store_unchanged(aishell.store, good.before)


def test_pull_refuses_3000_layers_with_one_diff_id(aishell, good):
    tar, _ = layer_tar()
    ref = serve(good.registry, "bad/count", *image(diff_ids=[digest(tar)], layer_count=3000))
    assert_one_error(aishell("pull", ref, user="unpriv", check=False),
                     r"config has 1 diff_ids but the manifest has 3000 layers")
    assert_store_unchanged(aishell.store, good.before)


def test_pull_refuses_a_deeply_nested_config(aishell, good):
    ref = serve(good.registry, "bad/deep", *image(extra_config=',"x":' + "[" * DEEP + "]" * DEEP))
    assert_one_error(aishell("pull", ref, user="unpriv", check=False),
                     r"image config is not valid JSON: nested deeper than 256 levels")
    assert_store_unchanged(aishell.store, good.before)


def test_pull_refuses_a_deeply_nested_manifest(aishell, good):
    manifest, blobs = image()
    deep = manifest[:-1] + b',"x":' + b"[" * DEEP + b"]" * DEEP + b"}"
    ref = serve(good.registry, "bad/deepmanifest", deep, blobs)
    assert_one_error(aishell("pull", ref, user="unpriv", check=False),
                     r"image manifest is not valid JSON: nested deeper than 256 levels")
    assert_store_unchanged(aishell.store, good.before)


def test_images_lists_the_others_and_marks_a_broken_one(aishell, good):
    tar, _ = layer_tar()
    plant(aishell, "broken/diffid:1", *image(diff_ids=["sha256:../../../../tmp/x"]))
    plant(aishell, "broken/count:1", *image(diff_ids=[digest(tar)], layer_count=3000))
    proc = aishell("images", user="unpriv")
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert rows[good.name.rsplit(":", 1)[0]][2] != "<broken>"
    assert rows["broken/diffid"][2] == "<broken>" and rows["broken/count"][2] == "<broken>"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("aishell: warning:")]
    assert len(warnings) == 2, proc.stderr
    listed = json.loads(aishell("images", "--json", user="unpriv").stdout)
    by_name = {row["name"]: row for row in listed}
    assert "broken" not in by_name[good.name] and by_name[good.name]["id"].startswith("sha256:")
    assert "invalid digest" in by_name["broken/diffid:1"]["broken"]
    assert "3000 layers" in by_name["broken/count:1"]["broken"]


def test_a_deeply_nested_config_in_the_store_is_an_error_not_a_crash(aishell, good):
    plant(aishell, "broken/deep:1", *image(extra_config=',"x":' + "[" * DEEP + "]" * DEEP))
    assert_one_error(aishell("inspect", "broken/deep:1", user="unpriv", check=False),
                     r"image config is not valid JSON: nested deeper than 256 levels")
    ctx = make_context(aishell, {"Dockerfile": "FROM broken/deep:1\nRUN true\n"})
    assert_one_error(aishell("build", ctx, user="unpriv", check=False),
                     r"image config is not valid JSON: nested deeper than 256 levels")
    proc = aishell("images", user="unpriv")
    assert "<broken>" in proc.stdout
