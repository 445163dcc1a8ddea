"""aishell build keeps bytes as Docker does (issue 13, items 1, 2 and 2b):

- ADD of a local file that is not a tar (recognised by content: tar, or tar inside gzip, bzip2,
  xz or zstd) copies it byte for byte, whatever its name; a real archive is extracted;
- names, link targets and xattr values are bytes: non-ASCII and non-UTF-8 ones go into the
  layer tar and come back out unchanged, whatever the locale (checked with Python's tarfile,
  umoci, and aishell's own extraction of the layer in a later step);
- a Dockerfile holding bytes that are not UTF-8 builds; the JSON aishell writes carries U+FFFD
  for them, as Go's encoding/json does, while the RUN command runs with its own bytes.

Every build runs as the unprivileged user on the module's busybox registry."""
import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import random
import subprocess
import tarfile

import pytest

from helpers.build import build, layer_members, make_context, manifest_and_config
from helpers.checks import umoci_unpack
from helpers.store import verify_store


def _tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zstd(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout


def _sha(data):
    return hashlib.sha256(data).hexdigest()


# Files ADD must copy as they are: not tars, whatever their names say.
PLAIN = {
    "text.txt": b"hello world\n",                                       # 12 bytes
    "seq.txt": "".join(f"{i}\n" for i in range(1, 20001)).encode(),    # 108,894 bytes
    "random.bin": random.Random(13).randbytes(100_000),
    "empty": b"",
    "x.tar.gz": b"not an archive at all\n",
    "text.gz": gzip.compress(b"gzip, but of text, not of a tar\n"),
    "eof.tar": b"\0" * 1024,                                            # only the end blocks
}


def _archives():
    inner = _tar({"a/one.txt": b"one\n", "a/two.txt": b"two\n" * 1000})
    return inner, {
        "t.tar": inner, "t.tar.gz": gzip.compress(inner), "t.tar.xz": lzma.compress(inner),
        "t.tar.bz2": bz2.compress(inner), "t.tar.zst": _zstd(inner),
        "archive.bin": gzip.compress(inner),  # recognised by content, not by name
    }


def test_add_copies_plain_files_byte_for_byte_and_extracts_real_archives(aishell, reg, tmp_path):
    _, archives = _archives()
    plain_names = sorted(PLAIN)
    lines = [f"FROM {reg.host}/busybox:latest", f"ADD {' '.join(plain_names)} /plain/"]
    lines += [f"ADD {name} /x/{name}/" for name in sorted(archives)]
    # What a later step sees: the copies, read through aishell's own extraction of the layer.
    lines.append("RUN cd /plain && sha256sum " + " ".join(plain_names) + " > /sums && wc -c text.txt seq.txt random.bin")
    ctx = make_context(aishell, {"Dockerfile": "\n".join(lines) + "\n", **PLAIN, **archives})
    r = build(aishell, ctx, "-t", "add:bytes")
    store = aishell.store
    assert not verify_store(store)
    manifest, _ = manifest_and_config(store, "add:bytes")

    # The layer tar itself records each file with its size.
    add_layer = layer_members(store, manifest["layers"][-len(archives) - 2])
    for name, data in PLAIN.items():
        assert add_layer[f"plain/{name}"].size == len(data), (name, add_layer[f"plain/{name}"].size)

    rootfs = umoci_unpack(store, "add:bytes", tmp_path / "bundle")
    for name, data in PLAIN.items():
        with open(os.path.join(rootfs, "plain", name), "rb") as f:
            assert _sha(f.read()) == _sha(data), name
    for name in archives:
        d = os.path.join(rootfs, "x", name)
        assert sorted(os.listdir(d)) == ["a"], (name, os.listdir(d))
        assert open(os.path.join(d, "a/one.txt"), "rb").read() == b"one\n"
        assert open(os.path.join(d, "a/two.txt"), "rb").read() == b"two\n" * 1000
    sums = open(os.path.join(rootfs, "sums")).read().splitlines()
    assert sums == [f"{_sha(PLAIN[n])}  {n}" for n in plain_names], sums
    assert "12 text.txt" in r.stdout + r.stderr and "108894 seq.txt" in r.stdout + r.stderr


# --- names are bytes -------------------------------------------------------------------------
JAPANESE = "日本.txt".encode()
NAMES_DOCKERFILE = b"""\
FROM {base}
ENV LANG=C.UTF-8
COPY \xe6\x97\xa5\xe6\x9c\xac.txt /ctx/
RUN ln -s "F\xc5\x91.pem" /lnk && touch /caf\xc3\xa9 && mkdir /d && printf data > "/d/$(printf 'a\\351')" \\
 && ln "/d/$(printf 'a\\351')" /d/z && ln -s "$(printf 'x\\351')" /lnk2 && touch "/$(printf 'bad\\351')"
"""
# What the RUN made, as bytes: name -> (kind, link target).
RUN_ENTRIES = {
    b"lnk": ("sym", b"F\xc5\x91.pem"), b"caf\xc3\xa9": ("file", None), b"d/a\xe9": ("file", None),
    b"d/z": ("hard", b"d/a\xe9"), b"lnk2": ("sym", b"x\xe9"), b"bad\xe9": ("file", None),
}


def _members(store, desc):
    """{name as bytes: TarInfo}; Python's tarfile, names decoded with surrogateescape."""
    from helpers.store import read_blob
    data = read_blob(store, desc["digest"])
    if desc["mediaType"].endswith("gzip"):
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as t:
        return {m.name.rstrip("/").encode("utf-8", "surrogateescape"): m for m in t.getmembers()}


def _b(s):
    return s.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("mode", ["subuid", "single"])
def test_non_ascii_and_non_utf8_names_round_trip_through_the_layer(aishell, reg, mode, tmp_path):
    ctx = make_context(aishell, {"Dockerfile": NAMES_DOCKERFILE.replace(b"{base}", f"{reg.host}/busybox:latest".encode()),
                                 JAPANESE.decode(): b"nihon\n"})
    # The user's locale is not aishell's: a UTF-8 LANG changes nothing.
    build(aishell, ctx, "-t", "names:1", mode=mode, env={"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    store = aishell.store
    assert not verify_store(store)
    manifest, _ = manifest_and_config(store, "names:1")

    # An independent reader finds the bytes in the layer tars.
    copied = _members(store, manifest["layers"][-2])
    assert copied[b"ctx/" + JAPANESE].size == 6
    ran = _members(store, manifest["layers"][-1])
    for name, (kind, target) in RUN_ENTRIES.items():
        m = ran[name]
        assert {"sym": m.issym(), "hard": m.islnk(), "file": m.isfile()}[kind], name
        if target is not None:
            assert _b(m.linkname) == target, (name, m.linkname)

    # umoci unpacks the same names.
    rootfs = os.fsencode(umoci_unpack(store, "names:1", tmp_path / "bundle"))
    assert os.listdir(os.path.join(rootfs, b"ctx")) == [JAPANESE]
    assert sorted(os.listdir(os.path.join(rootfs, b"d"))) == [b"a\xe9", b"z"]
    assert os.readlink(os.path.join(rootfs, b"lnk")) == b"F\xc5\x91.pem"
    assert os.readlink(os.path.join(rootfs, b"lnk2")) == b"x\xe9"
    assert os.path.isfile(os.path.join(rootfs, b"bad\xe9")) and os.path.isfile(os.path.join(rootfs, b"caf\xc3\xa9"))

    # aishell's own extraction of those layers gives the bytes back: the unpacked trees the
    # build left are removed, so exec unpacks every layer from its blob.
    subprocess.run(["sh", "-c", f"rm -rf {store}/layers/*"], check=True)
    # (echo of globs, not ls: busybox ls shows '?' for bytes it cannot print)
    script = ("cd / && { readlink lnk; readlink lnk2; echo ctx/*; echo d/a*; echo bad*; echo caf*;"
              " stat -c %i d/z; stat -c %i d/a*; } | od -An -tx1 -v")
    user = ["--user", "0"] if mode == "single" else []
    r = aishell("exec", "--image", "names:1", *user, "--", "sh", "-c", script,
                user="unpriv", env={"AISHELL_USERNS": mode})
    out = bytes.fromhex("".join(r.stdout.split())).split(b"\n")
    assert out[:6] == [b"F\xc5\x91.pem", b"x\xe9", b"ctx/" + JAPANESE, b"d/a\xe9", b"bad\xe9", b"caf\xc3\xa9"], out
    assert out[6] == out[7], out  # d/z is still a hardlink of d/a\xe9


# --- a Dockerfile that is not UTF-8 ----------------------------------------------------------
LATIN1_DOCKERFILE = b"""\
FROM {base}
LABEL author="Jos\xe9"
RUN echo "caf\xe9" > /f
"""


def _run_bytes(aishell, *args, env=None):
    """aishell as the unprivileged user, output as bytes: its step lines echo the Dockerfile's
    own bytes, as Docker's do."""
    p = aishell.popen(*args, user="unpriv", env=env, text=False)
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, (out, err)
    return out, err


def test_dockerfile_in_latin1_builds_with_u_fffd_in_the_json_and_its_bytes_in_the_run(aishell, reg, tmp_path):
    ctx = make_context(aishell, {"Dockerfile": LATIN1_DOCKERFILE.replace(b"{base}", f"{reg.host}/busybox:latest".encode())})
    out, _ = _run_bytes(aishell, "build", "--check", "--json", ctx)
    text = out.decode("utf-8")  # strictly UTF-8
    json.loads(text)
    assert "Jos\ufffd" in text, text

    _, err = _run_bytes(aishell, "build", "-t", "latin1:1", ctx, env={"AISHELL_USERNS": "subuid"})
    assert b'RUN /bin/sh -c echo "caf\xe9" > /f' in err, err
    store = aishell.store
    assert not verify_store(store)
    manifest, config = manifest_and_config(store, "latin1:1")
    # As Docker (Go's encoding/json): U+FFFD in the config...
    assert config["config"]["Labels"] == {"author": "Jos\ufffd"}
    assert any("caf\ufffd" in h.get("created_by", "") for h in config["history"]), config["history"]
    # ...while the RUN ran with the Dockerfile's own bytes.
    from helpers.store import read_blob
    data = read_blob(store, manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as t:
        assert t.extractfile("f").read() == b"caf\xe9\n"
