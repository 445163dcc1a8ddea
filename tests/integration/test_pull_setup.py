"""aishell setup: pulls the foundation (here from a loopback registry instead of Docker Hub),
names it aishell:foundation, and points aishell:base at the same manifest."""
import json

import pytest

from helpers.checks import assert_one_error, assert_pulled, entry, skopeo_inspect
from helpers.store import image_names

USERS = ["root", "unpriv"]


def names_to_digests(store):
    return {name: d["digest"] for name, d in image_names(store).items()}


@pytest.mark.parametrize("user", USERS)
def test_setup_with_foundation_flag(aishell, registry, images, user, tmp_path):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell("setup", "--foundation", ref, user=user)
    digest = images.manifest_digest(images.busybox)
    assert_pulled(aishell.store, "aishell:foundation", digest, tmp_path=tmp_path)
    assert entry(aishell.store, "aishell:base")["digest"] == digest
    assert skopeo_inspect(aishell.store, "aishell:base")["Digest"] == digest
    rows = json.loads(aishell("images", "--json", user=user).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["aishell:foundation"]["digest"] == by_name["aishell:base"]["digest"] == digest
    info = json.loads(aishell("inspect", "aishell:base", user=user).stdout)
    assert info["Digest"] == digest


def test_setup_with_aishell_foundation_env(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell("setup", user="unpriv", env={"AISHELL_FOUNDATION": ref})
    digest = images.manifest_digest(images.busybox)
    assert names_to_digests(aishell.store)["aishell:foundation"] == digest
    assert names_to_digests(aishell.store)["aishell:base"] == digest


def test_setup_flag_wins_over_env(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell("setup", "--foundation", ref, user="unpriv",
            env={"AISHELL_FOUNDATION": f"{reg.host}/no/such:1"})
    assert names_to_digests(aishell.store)["aishell:foundation"] == \
        images.manifest_digest(images.busybox)


def test_setup_again_does_not_pull_but_force_does(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/foundation:1")
    aishell("setup", "--foundation", ref, user="unpriv")
    old = images.manifest_digest(images.busybox)
    # The tag moves to another image in the registry.
    images.push(images.hello, reg, "lib/foundation:1")
    new = images.manifest_digest(images.hello)
    aishell("setup", "--foundation", ref, user="unpriv")
    assert names_to_digests(aishell.store)["aishell:foundation"] == old
    aishell("setup", "--force", "--foundation", ref, user="unpriv")
    digests = names_to_digests(aishell.store)
    assert digests["aishell:foundation"] == new
    assert digests["aishell:base"] == new, "the base alias follows a re-pulled foundation"


def test_setup_force_uses_the_remembered_reference(aishell, registry, images):
    reg = registry("http")
    ref = images.push(images.busybox, reg, "lib/foundation:1")
    aishell("setup", "--foundation", ref, user="unpriv")
    images.push(images.hello, reg, "lib/foundation:1")
    aishell("setup", "--force", user="unpriv")
    assert names_to_digests(aishell.store)["aishell:foundation"] == \
        images.manifest_digest(images.hello)


def test_setup_help_says_what_force_rebuilds(aishell):
    out = " ".join(aishell("setup", "--help", user="unpriv").stdout.split())
    assert ("--force Pull the foundation again even when it is present, rebuild a custom base "
            "(~/.aishell/Dockerfile) now and every project's image on its next run, all without the step cache") in out


def test_setup_failure_is_one_error_and_names_nothing(aishell, registry):
    reg = registry("http")
    proc = aishell("setup", "--foundation", f"{reg.host}/no/such:1", user="unpriv", check=False)
    assert_one_error(proc, r"no/such|404|not found|unknown")
    rows = json.loads(aishell("images", "--json", user="unpriv").stdout)
    assert rows == []


def test_images_and_inspect_of_unknown_name(aishell):
    assert json.loads(aishell("images", "--json", user="unpriv").stdout) == []
    proc = aishell("inspect", "no-such-image", user="unpriv", check=False)
    assert_one_error(proc, r"no-such-image")
