#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/ (checked in).

  tests/fuzz/make_seeds.py

Seeds come from the tests' own cases: tests/fixtures/dockerfiles, the case tables of the unit
tests (shell_lex, dockerignore, reference, registry_auth, types), small documents shaped like
what distribution, skopeo and umoci write, and the crafted layer tars of
tests/fixtures/crafted/make_corpus.py (plain, gzip and zstd). Each file is named by the sha1 of
its bytes, as libFuzzer names the inputs it adds. Rerunning only adds files; crash reproducers
added by hand (crash-*) are kept.
"""
import glob
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def dockerfiles():
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "dockerfiles", "*.Dockerfile"))):
        with open(path, "rb") as f:
            put("dockerfile", f.read())
    put("dockerfile", "# escape=`\nFROM a AS b\nRUN --mount=type=cache,target=/c `\n  echo \"${A:-x}\"\n"
                      "COPY --from=b --chown=1:1 <<EOF /x\nhi $A\nEOF\nONBUILD RUN x\n"
                      "HEALTHCHECK --interval=5s --retries=3 CMD [\"true\"]\nEXPOSE 80/udp 8000-8001\n")


def shell_lex():
    words = ["$V", "${V}", "a${V}b", "$Vx", "${UNSET}", "$", "a$/b", "${UNSET:-w}", "${EMPTY-w}",
             "${V:+w}", "${EMPTY+w}", "${UNSET:-$V}", "${UNSET:-a b}", "${UNSET:?must be set}",
             "${EMPTY?}", "${V", "${}", "${V:=x}", "'abc", "\"abc", "'$V'", "\"$V\"", "\\$V",
             "\"a\\\\b\"", "a\\ b", "'it''s'", "abc\\", "${F#*.}", "${F##*.}", "${F%.*}", "${F%%.*}",
             "${P/local/opt}", "${F//a/A}", "a $SP", "a \"$SP\"", "  x   y ", "${STAR/\\*/x}"]
    for i, w in enumerate(words):
        put("shell_lex", bytes([i % 32]) + w.encode())
    put("shell_lex", b"\x01a`$V`\"`\"\" ${V:-`}}")


def dockerignore():
    put("dockerignore", "# comment\n*.md\n!README.md\n/build\n**/node_modules\n.git\n")
    put("dockerignore", "a[b-d]e\na[^b-d]e\n[\\]a]\n[x\\-]\na\\*b\n\x00ace\x00a*b\x00aze")
    put("dockerignore", "docs\n!docs/README.md\n\x00docs/README.md\x00docs/other.md")
    put("dockerignore", "**/dir2/**\n**file\na?b\n\x00dir/dir2/dir3/file\x00a\xe2\x98\xbab")
    put("dockerignore", "./docs/../docs\n   spaced   \n\n!\n[\n")


def reference():
    for r in ["debian", "debian:bookworm-slim", "docker.io/debian", "index.docker.io/library/debian",
              "library/debian", "team/app", "quay.io/team/app:v1.2", "localhost:5000/a/b/c:tag",
              "127.0.0.1:5000/repo", "[::1]:5000/repo:1", "UPPER.example/Repo", "a/b_c/d__e/f-g/h.i",
              "host.example:5000/team/app:1@sha256:" + "0123456789abcdef" * 4,
              "busybox@sha256:" + "ab" * 32, "repo@md5:0123", "repo:tag:tag", "a..b/c", ":tag"]:
        put("reference", r)


def www_authenticate():
    for h in ['Bearer realm="https://auth.example/token",service="registry.example",scope="repository:lib/app:pull"',
              'Basic realm="Registry Realm"',
              'BEARER Realm = "https://a/t?x=1,y" , Service=svc, Scope="repository:a:pull repository:b:pull", Basic realm="r\\"q"',
              'Bearer realm="https://a/t",error="insufficient_scope",scope="repository:x:pull"',
              '"unterminated', 'Bearer realm="unterminated', ",,,", "dXNlcjpwYXNz", "Zg==", "Zm9v"]:
        put("www_authenticate", h)


def oci_types():
    d = ["sha256:" + c * 64 for c in "123"]
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                         "Cmd": ["sh"], "Entrypoint": None, "WorkingDir": "/", "User": "1000:1000",
                         "Labels": {"org.opencontainers.image.title": "t"}},
              "rootfs": {"type": "layers", "diff_ids": d[1:]},
              "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD file:x in /"}]}
    oci_manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d[0], "size": 100},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d[1], "size": 2000},
                               {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": d[2], "size": 0}],
                    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}
    docker_manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d[0], "size": 1469},
                       "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d[1], "size": 2800000}]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d[0], "size": 500,
                            "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                           {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d[1], "size": 500,
                            "platform": {"os": "unknown", "architecture": "unknown"},
                            "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                            "vnd.docker.reference.digest": d[0]}}]}
    docker_list = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                   "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": d[2],
                                  "size": 528, "platform": {"os": "windows", "architecture": "amd64",
                                                            "os.version": "10.0.17763.1", "os.features": ["win32k"]}}]}
    for doc in [config, oci_manifest, docker_manifest, index, docker_list]:
        put("oci_types", json.dumps(doc, indent=3 if doc is docker_manifest else None))
    for text in ['{"schemaVersion":1,"name":"library/busybox","tag":"latest","fsLayers":[]}',
                 '{"schemaVersion":2,"config":{},"layers":[]}', '{"schemaVersion":2,"manifests":[]}',
                 '{"rootfs":{"type":"layers","diff_ids":["sha256:00"]}}', '[1,{"a":null},-1e999]']:
        put("oci_types", text)


def layer_extract():
    """The crafted tars (every hostile case and the feature tar), trimmed to their end-of-archive
    blocks, prefixed with the compression byte: 0 none, 1 gzip, 2 zstd."""
    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.join(tmp, "work")
        os.makedirs(os.path.join(work, "canary_dir"))
        open(os.path.join(work, "canary"), "w").close()
        out = os.path.join(work, "corpus")
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fixtures", "crafted", "make_corpus.py"),
                        out, "--canary-file", os.path.join(work, "canary"),
                        "--canary-dir", os.path.join(work, "canary_dir")], check=True)
        for path in sorted(glob.glob(os.path.join(out, "*.tar"))):
            with open(path, "rb") as f:
                data = f.read().rstrip(b"\0")
            data += b"\0" * (-len(data) % 512 + 1024)
            put("layer_extract", b"\0" + data)
            if os.path.basename(path) == "features.tar":
                put("layer_extract", b"\1" + gzip.compress(data, mtime=0))
                if shutil.which("zstd"):
                    z = subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
                    put("layer_extract", b"\2" + z)


def docker_archive():
    """manifest.json as docker save (20.10 and 25) writes it, repositories, and member names with
    the symlinks Docker writes for shared layers, plus escapes and a loop."""
    old = [{"Config": "4f1b" * 16 + ".json", "RepoTags": ["busybox:latest"], "Layers": ["aa/layer.tar", "bb/layer.tar"]},
           {"Config": "9c3d" * 16 + ".json", "RepoTags": None, "Layers": ["aa/layer.tar"]}]
    new = [{"Config": "blobs/sha256/" + "ab" * 32, "RepoTags": ["x:1"], "Layers": ["blobs/sha256/" + "cd" * 32],
            "LayerSources": {"sha256:" + "cd" * 32: {"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                                    "size": 1024, "digest": "sha256:" + "cd" * 32}}}]
    put("docker_archive", json.dumps(old) + "\0aa/layer.tar\0bb/layer.tar\0bb/layer.tar\0../aa/layer.tar")
    put("docker_archive", json.dumps(new) + "\0./blobs//sha256/x\0a/l\0../../etc/passwd\0b\0/etc\0c\0c")
    put("docker_archive", '{"busybox":{"latest":"aa","1":"aa"},"team/app":{"v2":"bb"}}\0a\0../b/x\0b/x\0../a')


for make in [dockerfiles, shell_lex, dockerignore, reference, www_authenticate, oci_types, layer_extract, docker_archive]:
    make()
