"""An OCI archive (what `aishell load -i` reads) of one image whose only layer is a tar of one
file of SIZE random bytes: the memory bounds of load, save and push (test_share_memory.py) and
the 2 GB measurement of docs/performance.md. The tests' copy is cached (cached_big_archive).

The layer is a gzip of stored (level 0) deflate blocks: a valid gzip that costs no compression
time, and random data would not shrink anyway. Everything is streamed in 1 MiB pieces, so making
a 2 GB archive takes no more memory than a small one.

By hand: python3 tests/integration/helpers/big_image.py OUT.tar SIZE_MB
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import zlib

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
NAME = "docker.io/library/big:1"
CHUNK = 1 << 20


def _write_layer(path, size):
    """The gzipped layer at path; returns (blob digest, blob size, diff_id)."""
    diff_id, blob = hashlib.sha256(), hashlib.sha256()
    gzip = zlib.compressobj(0, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # wbits 16+: a gzip wrapper
    with open(path, "wb") as out:
        def put(data):
            diff_id.update(data)
            emit(gzip.compress(data))

        def emit(data):
            blob.update(data)
            out.write(data)

        info = tarfile.TarInfo("big.bin")
        info.size = size
        info.mode = 0o644
        put(info.tobuf(tarfile.USTAR_FORMAT))
        left = size
        while left:
            n = min(left, CHUNK)
            put(os.urandom(n))
            left -= n
        put(b"\0" * ((-size) % 512 + 1024))  # the file's padding, then the end-of-archive blocks
        emit(gzip.flush())
        blob_size = out.tell()
    return "sha256:" + blob.hexdigest(), blob_size, "sha256:" + diff_id.hexdigest()


def _member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def make_big_archive(path, size):
    """Writes the archive to path; returns (image name, manifest digest, layer blob size)."""
    layer_path = path + ".layer"
    try:
        layer_digest, layer_size, diff_id = _write_layer(layer_path, size)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["true"]},
                             "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size}]}).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest),
            "annotations": {"io.containerd.image.name": NAME, "org.opencontainers.image.ref.name": "1"}}]}).encode()
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            _member(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _member(tar, "index.json", index)
            _member(tar, "blobs/sha256/" + manifest_digest[7:], manifest)
            _member(tar, "blobs/sha256/" + config_digest[7:], config)
            info = tarfile.TarInfo("blobs/sha256/" + layer_digest[7:])
            info.size = layer_size
            info.mode = 0o644
            with open(layer_path, "rb") as f:
                tar.addfile(info, f)
    finally:
        if os.path.exists(layer_path):
            os.unlink(layer_path)
    os.chmod(path, 0o644)
    return NAME, manifest_digest, layer_size


def cached_big_archive(size):
    """make_big_archive's archive of size, made once and kept under $AISHELL_FIXTURES_CACHE
    (default /var/tmp/aishell-fixtures, as helpers/runtime_images.py): the suite runs twice in
    CI, and writing 300 MB of random bytes is most of what the memory tests cost. Readable by
    every user. Returns (path, image name, manifest digest)."""
    cache = os.path.join(os.environ.get("AISHELL_FIXTURES_CACHE", "/var/tmp/aishell-fixtures"), "big-image")
    os.makedirs(cache, exist_ok=True)
    os.chmod(cache, 0o755)
    path = os.path.join(cache, f"big-{size}.tar")
    digest_path = path + ".digest"
    if not (os.path.exists(path) and os.path.exists(digest_path)):
        tmp = f"{path}.tmp-{os.getpid()}"
        _, digest, _ = make_big_archive(tmp, size)
        with open(digest_path, "w") as f:
            f.write(digest)
        os.rename(tmp, path)
    with open(digest_path) as f:
        return path, NAME, f.read().strip()


if __name__ == "__main__":
    name, digest, layer = make_big_archive(sys.argv[1], int(sys.argv[2]) * 1000 * 1000)
    print(f"{sys.argv[1]}: {name} {digest}, a {layer / 1e6:.0f} MB layer")
