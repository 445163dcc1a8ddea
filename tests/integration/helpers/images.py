"""Fixture images, built by independent tools (umoci, skopeo, busybox-static), never by aishell.

The layout (one OCI image layout, refs below) is built once and cached by content key:
  busybox        host-arch OCI image: a layer with /bin/busybox and applet symlinks, a layer with
                 /etc files; Cmd ["sh"]
  busybox-other  the same layers with a config for the other architecture (arm64 or amd64)
  hello          a tiny single-layer image (/hello.txt), for pre-populating stores
  multi          an OCI index: busybox (host), busybox-other, and a Docker Hub style attestation
                 manifest (platform unknown/unknown, vnd.docker.reference.type=attestation-manifest)
and next to it, a `dir:` copy of busybox converted to Docker schema2 by skopeo (--format v2s2),
which skopeo pushes unchanged (the oci: transport holds only OCI manifests).

Run as a program (python3 -m helpers.images OUTDIR, from tests/integration) to build into OUTDIR
and print the references as JSON; scripts/demo does that.
"""
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile

from .util import make_world_readable, run, sha256_bytes, sha256_file

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "ash", "ls", "id", "cat", "echo", "true", "false", "sleep", "env", "pwd",
           "mkdir", "rm", "cp", "mv", "ln", "touch", "chmod", "chown", "stat", "grep", "sed",
           "head", "tail", "wc", "test", "[", "uname", "whoami", "printf", "find", "sha256sum",
           "ps", "kill", "mount", "umount", "hostname", "readlink", "tar", "vi"]
ATTESTATION_TYPE = "attestation-manifest"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


def host_arch():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)


def other_arch():
    return "arm64" if host_arch() != "arm64" else "amd64"


def _variant(arch):
    return "v8" if arch == "arm64" else None


class Images:
    """References to the fixture images and the facts tests check against."""

    def __init__(self, root):
        self.root = root
        self.layout = os.path.join(root, "layout")
        self.v2s2_dir = os.path.join(root, "busybox-v2s2")
        self.busybox = f"oci:{self.layout}:busybox"
        self.busybox_other = f"oci:{self.layout}:busybox-other"
        self.hello = f"oci:{self.layout}:hello"
        self.multi = f"oci:{self.layout}:multi"
        self.busybox_v2s2 = f"dir:{self.v2s2_dir}"
        self.host_arch = host_arch()
        self.other_arch = other_arch()
        with open(os.path.join(root, "facts.json")) as f:
            self.facts = json.load(f)

    def manifest_digest(self, ref):
        """The manifest (or index) digest of a fixture reference, computed from its bytes."""
        return self.facts["digests"][ref.rsplit(":", 1)[-1] if ref.startswith("oci:") else
                                     "busybox-v2s2"]

    @property
    def platform_digests(self):
        """{"linux/amd64": manifest digest, ...} of the multi index's real platforms."""
        return self.facts["platforms"]

    def push(self, layout_ref, registry, repo_tag, admin=True):
        return push(layout_ref, registry, repo_tag, admin=admin)


def push(layout_ref, registry, repo_tag, admin=True):
    """skopeo copy a fixture to registry as repo:tag, byte for byte (--preserve-digests)."""
    cmd = ["skopeo", "copy", "--quiet", "--preserve-digests"]
    if layout_ref.endswith(":multi"):
        cmd.append("--all")
    cmd += registry.skopeo_dest_args(admin=admin)
    cmd += [layout_ref, f"docker://{registry.host}/{repo_tag}"]
    run(cmd, timeout=120)
    return f"{registry.host}/{repo_tag}"


# --- building ---------------------------------------------------------------------------------
def _cache_key():
    h = hashlib.sha256()
    with open(__file__, "rb") as f:
        h.update(f.read())
    h.update(sha256_file(BUSYBOX).encode())
    h.update(host_arch().encode())
    for tool in (["umoci", "--version"], ["skopeo", "--version"]):
        h.update(run(tool).stdout.encode())
    return h.hexdigest()[:16]


def _blob_path(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":", 1))


def _read_blob(layout, digest):
    with open(_blob_path(layout, digest), "rb") as f:
        return f.read()


def _write_blob(layout, data):
    digest = sha256_bytes(data)
    with open(_blob_path(layout, digest), "wb") as f:
        f.write(data)
    return {"digest": digest, "size": len(data)}


def _index(layout):
    with open(os.path.join(layout, "index.json")) as f:
        return json.load(f)


def _descriptor(layout, name):
    for d in _index(layout)["manifests"]:
        if d.get("annotations", {}).get(REF_ANNOTATION) == name:
            return d
    raise KeyError(name)


def _add_layer(image, work, created_by, populate):
    """One layer made by umoci: unpack, change the rootfs, repack (umoci computes the diff).
    Not `umoci insert`: Debian's umoci 0.4.7 writes insert layers whose tar stream is cut short
    (gzip is valid, tar reports an unexpected EOF), which strict extractors rightly refuse."""
    bundle = tempfile.mkdtemp(prefix="bundle-", dir=work)
    os.rmdir(bundle)
    run(["umoci", "unpack", "--rootless", "--image", image, bundle])
    populate(os.path.join(bundle, "rootfs"))
    run(["umoci", "repack", "--history.created_by", created_by, "--image", image, bundle])
    shutil.rmtree(bundle)


def _build_busybox(layout, work):
    image = f"{layout}:busybox"
    run(["umoci", "new", "--image", image])
    os.makedirs(work, exist_ok=True)

    def add_busybox(rootfs):
        stage = os.path.join(rootfs, "bin")
        os.makedirs(stage)
        shutil.copy2(BUSYBOX, os.path.join(stage, "busybox"))
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(stage, applet))

    def add_etc(rootfs):
        etc = os.path.join(rootfs, "etc")
        os.makedirs(etc)
        files = {"passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
                 "group": "root:x:0:\nnogroup:x:65534:\n",
                 "aishell-fixture": "busybox fixture\n"}
        for name, text in files.items():
            with open(os.path.join(etc, name), "w") as f:
                f.write(text)

    _add_layer(image, work, "busybox-static", add_busybox)
    _add_layer(image, work, "etc files", add_etc)
    run(["umoci", "config", "--image", image, "--architecture", host_arch(), "--os", "linux",
         "--config.cmd", "sh", "--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
         "--config.workingdir", "/", "--config.label", "org.example.fixture=busybox"])
    run(["umoci", "config", "--image", image, "--tag", "busybox-other",
         "--architecture", other_arch(), "--config.label", "org.example.fixture=busybox-other"])


def _build_hello(layout, work):
    image = f"{layout}:hello"
    run(["umoci", "new", "--image", image])
    os.makedirs(work, exist_ok=True)

    def add_hello(rootfs):
        with open(os.path.join(rootfs, "hello.txt"), "w") as f:
            f.write("hello from a fixture\n")

    _add_layer(image, work, "hello.txt", add_hello)
    run(["umoci", "config", "--image", image, "--architecture", host_arch(), "--os", "linux",
         "--config.cmd", "/bin/sh"])


def _attestation_manifest(layout, subject_digest):
    """An in-toto attestation manifest shaped like the ones BuildKit pushes to Docker Hub."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1",
                            "predicateType": "https://spdx.dev/Document",
                            "subject": [{"name": "fixture", "digest": {
                                "sha256": subject_digest.split(":")[1]}}],
                            "predicate": {"spdxVersion": "SPDX-2.3"}}).encode()
    layer = _write_blob(layout, statement)
    config = _write_blob(layout, json.dumps({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode())
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, **config},
                "layers": [{"mediaType": "application/vnd.in-toto+json", **layer,
                            "annotations": {"in-toto.io/predicate-type":
                                            "https://spdx.dev/Document"}}]}
    return _write_blob(layout, json.dumps(manifest).encode())


def _platform(arch):
    p = {"architecture": arch, "os": "linux"}
    if _variant(arch):
        p["variant"] = _variant(arch)
    return p


def _build_multi(layout):
    host = _descriptor(layout, "busybox")
    other = _descriptor(layout, "busybox-other")
    att = _attestation_manifest(layout, host["digest"])
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": host["digest"], "size": host["size"],
         "platform": _platform(host_arch())},
        {"mediaType": OCI_MANIFEST, "digest": other["digest"], "size": other["size"],
         "platform": _platform(other_arch())},
        {"mediaType": OCI_MANIFEST, **att,
         "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.digest": host["digest"],
                         "vnd.docker.reference.type": ATTESTATION_TYPE}},
    ]}
    blob = _write_blob(layout, json.dumps(index, indent=2).encode())
    top = _index(layout)
    top["manifests"].append({"mediaType": OCI_INDEX, **blob,
                             "annotations": {REF_ANNOTATION: "multi"}})
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(top, f)
    return {f"linux/{host_arch()}": host["digest"], f"linux/{other_arch()}": other["digest"]}


def _facts(root, platforms):
    layout = os.path.join(root, "layout")
    digests = {d["annotations"][REF_ANNOTATION]: d["digest"] for d in _index(layout)["manifests"]}
    with open(os.path.join(root, "busybox-v2s2", "manifest.json"), "rb") as f:
        digests["busybox-v2s2"] = sha256_bytes(f.read())
    return {"digests": digests, "platforms": platforms}


def build(root):
    """Build every fixture into root (which must not exist yet)."""
    layout = os.path.join(root, "layout")
    os.makedirs(root)
    work = tempfile.mkdtemp(prefix="work-", dir=root)
    run(["umoci", "init", "--layout", layout])
    _build_busybox(layout, os.path.join(work, "busybox"))
    _build_hello(layout, os.path.join(work, "hello"))
    run(["umoci", "gc", "--layout", layout])
    platforms = _build_multi(layout)
    run(["skopeo", "copy", "--quiet", "--format", "v2s2", f"oci:{layout}:busybox",
         f"dir:{os.path.join(root, 'busybox-v2s2')}"])
    shutil.rmtree(work)
    with open(os.path.join(root, "facts.json"), "w") as f:
        json.dump(_facts(root, platforms), f, indent=1)
    make_world_readable(root)


def ensure_images(cache_dir):
    """Images from cache_dir/<key>, building them first if needed (safe against concurrent runs)."""
    os.makedirs(cache_dir, exist_ok=True)
    os.chmod(cache_dir, 0o755)
    final = os.path.join(cache_dir, _cache_key())
    if not os.path.exists(os.path.join(final, "facts.json")):
        tmp = tempfile.mkdtemp(prefix="build-", dir=cache_dir)
        os.rmdir(tmp)
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another session won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return Images(final)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 -m helpers.images CACHE_DIR")
    images = ensure_images(sys.argv[1])
    print(json.dumps({"root": images.root, "busybox": images.busybox, "hello": images.hello,
                      "multi": images.multi, "busybox_v2s2": images.busybox_v2s2,
                      "digests": images.facts["digests"]}, indent=1))
