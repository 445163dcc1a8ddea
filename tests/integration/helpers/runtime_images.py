"""Images for the runtime tests, written as an OCI image layout by Python's tarfile and gzip
(no umoci: Debian's umoci 0.4.7 `insert` writes tar streams cut short, without the last data
padding and end-of-archive blocks, which a strict extractor rightly refuses).

  rt-busybox  busybox-static with every applet (/bin), /etc files (root, nobody), Cmd ["sh"];
              two layers
  rt-sudo     rt-busybox's layers plus sudo as Debian installed it on this host (its files,
              the shared libraries they need, pam_unix), a merged-/usr layout (/lib -> usr/lib),
              and a user `dev` (1000:1000) with a NOPASSWD sudoers entry
  rt-many     rt-busybox plus 55 one-file layers (overlay options beyond a page with absolute paths)
  rt-tools    rt-busybox plus bash and git as Debian installed them on this host (with the shared
              libraries they load, merged /usr): the shell `aishell` prefers, and commits inside
  rt-entry    rt-busybox with ENTRYPOINT ["/entry.sh"], which prints "ENTRY-RAN <args>" and execs them
  rt-dev      rt-sudo's layers with USER dev (1000:1000), as a base ending in `USER dev`
  rt-filecaps rt-busybox plus /opt/caps/cat (busybox) with inheritable file capability
              CAP_DAC_OVERRIDE (security.capability v2, effective bit set, permitted empty) and
              an /etc/shadow of mode 0600 (CVE-2022-24769's pattern)

Built once per content key under $AISHELL_FIXTURES_CACHE (default /var/tmp/aishell-fixtures);
takes about a second.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile

from .images import host_arch, push as push_image
from .util import make_world_readable

BUSYBOX = "/bin/busybox"
MTIME = 1700000000
MANY_LAYERS = 55
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUDO_ELF = ["/usr/bin/sudo", "/usr/libexec/sudo/sudoers.so", "/usr/libexec/sudo/libsudo_util.so.0",
            "/usr/libexec/sudo/group_file.so", "/usr/libexec/sudo/system_group.so",
            "/usr/libexec/sudo/sesh"]
TOOLS_ELF = ["/usr/bin/bash", "/usr/bin/git"]
PAM_MODULES = ["pam_unix.so", "pam_permit.so", "pam_deny.so"]
PAM_DIR = "/usr/lib/x86_64-linux-gnu/security"


class Layer:
    """An uncompressed tar built in memory, entries owned by root unless told."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.names = set()

    def _info(self, name, kind, mode, uid=0, gid=0):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = MTIME
        return info

    def dir(self, name, mode=0o755, uid=0, gid=0):
        if name in self.names:
            return
        parent = os.path.dirname(name)
        if parent:
            self.dir(parent)
        self.names.add(name)
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name, data, mode=0o644, uid=0, gid=0, xattrs=None):
        if isinstance(data, str):
            data = data.encode()
        parent = os.path.dirname(name)
        if parent:
            self.dir(parent)
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(data)
        # Extended attributes as GNU tar and Docker write them (values here are ASCII bytes).
        info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("latin-1") for k, v in (xattrs or {}).items()}
        self.names.add(name)
        self.tar.addfile(info, io.BytesIO(data))

    def host_file(self, name, host_path, mode=None, xattrs=None):
        with open(host_path, "rb") as f:
            data = f.read()
        self.file(name, data, mode if mode is not None else os.stat(host_path).st_mode & 0o7777,
                  xattrs=xattrs)

    def symlink(self, name, target):
        if name in self.names:
            return
        parent = os.path.dirname(name)
        if parent:
            self.dir(parent)
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.names.add(name)
        self.tar.addfile(info)

    def finish(self):
        self.tar.close()
        return self.buf.getvalue()


# --- image layout -----------------------------------------------------------------------------
def _write_blob(layout, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest.split(":")[1])
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return {"digest": digest, "size": len(data)}


def _add_image(layout, name, layers, cmd, user="", entrypoint=None):
    """layers: uncompressed tar bytes, bottom first. Adds a manifest named `name`."""
    descriptors, diff_ids = [], []
    for tar in layers:
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        gz = gzip.compress(tar, compresslevel=6, mtime=0)
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            **_write_blob(layout, gz)})
    config = {"architecture": host_arch(), "os": "linux",
              "config": {"Env": [PATH_ENV], "Cmd": cmd, "WorkingDir": "/", "User": user,
                         **({"Entrypoint": entrypoint} if entrypoint else {})},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": "runtime_images.py"} for _ in layers]}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **_write_blob(layout, json.dumps(config, sort_keys=True).encode())},
                "layers": descriptors}
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
            **_write_blob(layout, json.dumps(manifest, sort_keys=True).encode()),
            "annotations": {"org.opencontainers.image.ref.name": name}}
    index_path = os.path.join(layout, "index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["manifests"].append(desc)
    with open(index_path, "w") as f:
        json.dump(index, f)


# --- contents ---------------------------------------------------------------------------------
def _busybox_layers():
    bin_layer = Layer()
    bin_layer.host_file("bin/busybox", BUSYBOX, 0o755)
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            bin_layer.symlink(f"bin/{applet}", "busybox")
    etc = Layer()
    etc.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    etc.file("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    etc.dir("root", 0o700)
    etc.dir("tmp", 0o1777)
    return [bin_layer.finish(), etc.finish()]


def _ldd_closure(paths):
    """Every shared object (and the loader) the ELF files in paths load, as ldd names them."""
    found = set()
    todo = list(paths)
    while todo:
        path = todo.pop()
        out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            lib = None
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                lib = parts[2]
            elif parts and parts[0].startswith("/"):
                lib = parts[0]
            if lib and lib not in found:
                found.add(lib)
                todo.append(lib)
    return sorted(found)


def _merged_usr(path):
    """/lib/x/y -> usr/lib/x/y (the image has /lib -> usr/lib, as Debian 12)."""
    real = os.path.realpath(path)
    return real.lstrip("/")


def _usr_name(path):
    """The path under merged /usr, without resolving the file's own symlinks."""
    for top in ("lib64", "lib", "bin", "sbin"):
        if path.startswith(f"/{top}/"):
            return f"usr/{top}/" + path[len(top) + 2:]
    return path.lstrip("/")


def _add_elf_files(layer, paths, modes=None):
    """paths (host ELF files) and every library they load, under a merged /usr."""
    layer.symlink("lib", "usr/lib")
    layer.symlink("lib64", "usr/lib64")
    for path in paths:
        layer.host_file(_merged_usr(path), path, (modes or {}).get(path))
    for lib in _ldd_closure(paths):
        real = _merged_usr(lib)
        if real not in layer.names:
            layer.host_file(real, os.path.realpath(lib))
        # The name the loader looks for, when it differs from the file's (libpam.so.0 -> ...,
        # /lib64/ld-linux-x86-64.so.2): an absolute symlink, as Debian has them.
        wanted = _usr_name(lib)
        if wanted != real and wanted not in layer.names:
            layer.symlink(wanted, "/" + real)


def _tools_layer():
    layer = Layer()
    _add_elf_files(layer, TOOLS_ELF)
    return layer.finish()


def _entry_layer():
    layer = Layer()
    layer.file("entry.sh", '#!/bin/sh\necho "ENTRY-RAN $*"\nexec "$@"\n', 0o755)
    return layer.finish()


def _sudo_layer():
    layer = Layer()
    pam = [os.path.join(PAM_DIR, m) for m in PAM_MODULES]
    _add_elf_files(layer, SUDO_ELF + pam, {"/usr/bin/sudo": 0o4755})
    layer.host_file("etc/sudo.conf", "/etc/sudo.conf")
    layer.file("etc/sudoers", "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\ndev ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
    pam_conf = "auth required pam_unix.so\naccount required pam_unix.so\nsession required pam_unix.so\n"
    layer.file("etc/pam.d/sudo", pam_conf)
    layer.file("etc/pam.d/other", "auth required pam_deny.so\naccount required pam_deny.so\n"
               "password required pam_deny.so\nsession required pam_deny.so\n")
    layer.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n"
               "nobody:x:65534:65534:nobody:/:/bin/false\n")
    layer.file("etc/group", "root:x:0:\ntty:x:5:\nsudo:x:27:dev\ndev:x:1000:\nnogroup:x:65534:\n")
    layer.file("etc/shadow", "root:*:19000:0:99999:7:::\ndev:*:19000:0:99999:7:::\n", 0o640)
    layer.file("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")
    layer.dir("home/dev", 0o755, 1000, 1000)
    layer.dir("run", 0o755)
    layer.dir("var/lib/sudo", 0o711)
    return layer.finish()


# struct vfs_cap_data, revision 2 (linux/capability.h): magic_etc (VFS_CAP_REVISION_2 |
# VFS_CAP_FLAGS_EFFECTIVE), then {permitted, inheritable} for caps 0-31 and 32-63, little endian.
CAP_DAC_OVERRIDE = 1
INHERITABLE_DAC_OVERRIDE = struct.pack("<IIIII", 0x02000001, 0, 1 << CAP_DAC_OVERRIDE, 0, 0)


def _filecaps_layer():
    layer = Layer()
    layer.host_file("opt/caps/cat", BUSYBOX, 0o755,
                    xattrs={"security.capability": INHERITABLE_DAC_OVERRIDE})
    layer.file("etc/shadow", "root:$6$not-for-nobody:19000:0:99999:7:::\n", 0o600)
    return layer.finish()


def _many_layers():
    layers = []
    for i in range(MANY_LAYERS):
        layer = Layer()
        layer.file(f"layers/{i:02d}", f"layer {i}\n")
        layers.append(layer.finish())
    return layers


# --- building and caching ---------------------------------------------------------------------
def _cache_key():
    h = hashlib.sha256()
    with open(__file__, "rb") as f:
        h.update(f.read())
    for path in [BUSYBOX] + SUDO_ELF + TOOLS_ELF:
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    h.update(host_arch().encode())
    return h.hexdigest()[:16]


class RuntimeImages:
    def __init__(self, layout):
        self.layout = layout
        self.busybox = f"oci:{layout}:rt-busybox"
        self.sudo = f"oci:{layout}:rt-sudo"
        self.many = f"oci:{layout}:rt-many"
        self.filecaps = f"oci:{layout}:rt-filecaps"
        self.tools = f"oci:{layout}:rt-tools"
        self.entry = f"oci:{layout}:rt-entry"
        self.dev = f"oci:{layout}:rt-dev"

    def push(self, layout_ref, registry, repo_tag):
        return push_image(layout_ref, registry, repo_tag)


def ensure_runtime_images(cache_root=None):
    cache_root = cache_root or os.environ.get("AISHELL_FIXTURES_CACHE", "/var/tmp/aishell-fixtures")
    final = os.path.join(cache_root, "runtime-" + _cache_key())
    layout = os.path.join(final, "layout")
    if os.path.exists(os.path.join(layout, "index.json")):
        return RuntimeImages(layout)
    os.makedirs(cache_root, exist_ok=True)
    work = tempfile.mkdtemp(prefix="runtime-build-", dir=cache_root)
    try:
        lay = os.path.join(work, "layout")
        os.makedirs(os.path.join(lay, "blobs", "sha256"))
        with open(os.path.join(lay, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with open(os.path.join(lay, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": []}, f)
        busybox = _busybox_layers()
        _add_image(lay, "rt-busybox", busybox, ["sh"])
        sudo = _sudo_layer()
        _add_image(lay, "rt-sudo", busybox + [sudo], ["sh"])
        _add_image(lay, "rt-dev", busybox + [sudo], ["sh"], user="dev")
        _add_image(lay, "rt-tools", busybox + [_tools_layer()], ["sh"])
        _add_image(lay, "rt-entry", busybox + [_entry_layer()], ["sh"], entrypoint=["/entry.sh"])
        _add_image(lay, "rt-many", busybox + _many_layers(), ["sh"])
        _add_image(lay, "rt-filecaps", busybox + [_filecaps_layer()], ["sh"])
        make_world_readable(work)
        try:
            os.rename(work, final)
        except OSError:  # built by a concurrent session first
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RuntimeImages(layout)
