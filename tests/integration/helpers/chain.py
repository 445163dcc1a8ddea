"""The three-tier chain as the tests drive it (test_chain.py, test_check.py): a store whose
foundation is rt-busybox, ~/.aishell/Dockerfile and project .aishell/Dockerfiles written as the
unprivileged user, runs through `aishell exec` without --image, and what they built."""
import hashlib
import json
import os

from helpers.build import manifest_and_config
from helpers.store import image_names

BASE_LINE = "Building global base image..."
EXT_LINE = "Building project image..."
BASE = "FROM aishell:foundation\nRUN echo base-1 > /base-marker\n"
EXT = "FROM aishell:base\nRUN echo ext-1 > /ext-marker\n"


def set_up_chain(aishell, registry, rt_images):
    """A store set up with rt-busybox as the foundation; returns a Chain."""
    reg = registry("http")
    rt_images.push(rt_images.busybox, reg, "lib/foundation:1")
    aishell("setup", "--foundation", f"{reg.host}/lib/foundation:1", user="unpriv")
    return Chain(aishell, reg)


class Chain:
    def __init__(self, aishell, registry=None):
        self.aishell = aishell
        self.registry = registry

    def write(self, path, text):
        """Write path (under the test's workdir or HOME) as the unprivileged user would."""
        rel = os.path.relpath(path, self.aishell.home)
        if not rel.startswith(".."):
            return self.aishell.write_home_file(rel, text)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        d = path
        while d != self.aishell.workdir:
            os.chown(d, self.aishell.entry.pw_uid, self.aishell.entry.pw_gid)
            d = os.path.dirname(d)
        return path

    def base_dockerfile(self, text):
        return self.write(os.path.join(self.aishell.home, ".aishell", "Dockerfile"), text)

    def project(self, name="proj", dockerfile=None, files=None):
        path = os.path.join(self.aishell.workdir, name)
        self.aishell.make_dir(path)
        if dockerfile is not None:
            self.write(os.path.join(path, ".aishell", "Dockerfile"), dockerfile)
        for rel, text in (files or {}).items():
            self.write(os.path.join(path, ".aishell", rel), text)
        return path

    def exec(self, cwd, *cmd, check=True):
        return self.aishell("exec", "--network", "none", *cmd, user="unpriv", cwd=cwd, check=check,
                            timeout=300)

    def names(self):
        return {name: d["digest"] for name, d in image_names(self.aishell.store).items()}

    def labels(self, name):
        return manifest_and_config(self.aishell.store, name)[1]["config"].get("Labels") or {}

    def record(self):
        with open(os.path.join(self.aishell.store, "chain", "record.json")) as f:
            return json.load(f)


def built(proc):
    """Which tiers a run built, from its plain progress lines (stderr is not a terminal)."""
    return [line for line in proc.stderr.splitlines() if line in (BASE_LINE, EXT_LINE)]


def ext_name(project):
    real = os.path.realpath(project)
    return "aishell:ext-" + hashlib.sha256(real.encode()).hexdigest()[:12]
