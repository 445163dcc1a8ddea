"""Independent checks of an aishell store: snapshots, blob verification, names in index.json.

These read the OCI layout directly (never through aishell) so a test can prove that a failed
pull left index.json and blobs/ exactly as before and that every blob still matches its name.
"""
import hashlib
import json
import os

REF_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


def oci_dir(store):
    return os.path.join(store, "oci")


def snapshot(store, ignore_top=("tmp", "lock")):
    """{relative path: (kind, content sha256 or link target or mode)} of everything in the store
    except tmp/ (partial downloads may remain there, by design) and the lock file."""
    result = {}
    if not os.path.exists(store):
        return result
    for root, dirs, files in os.walk(store):
        rel_root = os.path.relpath(root, store)
        if rel_root == ".":
            dirs[:] = [d for d in dirs if d not in ignore_top]
            files = [f for f in files if f not in ignore_top]
        for d in dirs:
            result[os.path.normpath(os.path.join(rel_root, d))] = ("dir",)
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.normpath(os.path.join(rel_root, name))
            if os.path.islink(path):
                result[rel] = ("link", os.readlink(path))
            else:
                with open(path, "rb") as f:
                    result[rel] = ("file", hashlib.sha256(f.read()).hexdigest())
    return result


def diff_snapshots(before, after):
    """Human-readable differences between two snapshots ("" when equal)."""
    lines = []
    for path in sorted(set(before) | set(after)):
        if path not in after:
            lines.append(f"removed: {path}")
        elif path not in before:
            lines.append(f"added:   {path}")
        elif before[path] != after[path]:
            lines.append(f"changed: {path}")
    return "\n".join(lines)


def read_index(store):
    with open(os.path.join(oci_dir(store), "index.json"), "rb") as f:
        return json.load(f)


def image_names(store):
    """{ref name: descriptor} from the store's index.json."""
    return {d["annotations"][REF_ANNOTATION]: d for d in read_index(store).get("manifests", [])
            if REF_ANNOTATION in d.get("annotations", {})}


def blob_path(store, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(oci_dir(store), "blobs", algo, hexd)


def read_blob(store, digest):
    with open(blob_path(store, digest), "rb") as f:
        return f.read()


def verify_blobs(store):
    """Every file in blobs/sha256 hashes to its name. Returns a list of problems."""
    problems = []
    blobs = os.path.join(oci_dir(store), "blobs", "sha256")
    if not os.path.isdir(blobs):
        return problems
    for name in sorted(os.listdir(blobs)):
        h = hashlib.sha256()
        with open(os.path.join(blobs, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != name:
            problems.append(f"blob {name} hashes to {h.hexdigest()}")
    return problems


def _check_descriptor(store, desc, problems, seen):
    digest = desc["digest"]
    if digest in seen:
        return
    seen.add(digest)
    path = blob_path(store, digest)
    if not os.path.exists(path):
        problems.append(f"missing blob {digest}")
        return
    if os.path.getsize(path) != desc.get("size", -1):
        problems.append(f"blob {digest} size {os.path.getsize(path)} != {desc.get('size')}")
    media_type = desc.get("mediaType", "")
    if "manifest" not in media_type and "index" not in media_type:
        return
    doc = json.loads(read_blob(store, digest))
    if media_type in INDEX_TYPES or "manifests" in doc:
        for child in doc.get("manifests", []):
            # An index may be stored partially (only the chosen platform); only check present ones.
            if os.path.exists(blob_path(store, child["digest"])):
                _check_descriptor(store, child, problems, seen)
        return
    for child in [doc["config"]] + doc.get("layers", []):
        _check_descriptor(store, child, problems, seen)


def verify_store(store):
    """Problems with the store: bad blobs, or images whose manifest, config or layers are
    missing or of the wrong size. An empty list means every image verifies."""
    if not os.path.exists(os.path.join(oci_dir(store), "index.json")):
        return []
    problems = verify_blobs(store)
    seen = set()
    for desc in read_index(store).get("manifests", []):
        _check_descriptor(store, desc, problems, seen)
    return problems
