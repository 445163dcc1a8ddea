"""Registry authentication: htpasswd Basic (login --password-stdin, existing auth files) and the
Bearer token flow against a token issuer that really checks passwords and scopes. Secrets never
appear in aishell's output, not even with --debug."""
import base64
import json
import os
import subprocess

import pytest

from helpers.checks import assert_one_error, assert_pulled
from helpers.downgrade_front import DowngradeFront

USERS = ["root", "unpriv"]


def auth_file(username, password, host):
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": token}}})


def assert_no_secret(proc, *secrets):
    for secret in secrets:
        assert secret not in proc.stdout and secret not in proc.stderr, \
            "a secret was printed:\n" + proc.stdout + proc.stderr


@pytest.mark.parametrize("user", USERS)
def test_htpasswd_login_password_stdin_then_pull_then_logout(aishell, registry, images, user):
    reg = registry("htpasswd")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    assert_one_error(aishell("pull", ref, user=user, check=False), r"401|unauthori[sz]ed|auth")

    login = aishell("login", reg.host, "-u", reg.username, "--password-stdin",
                    input=reg.password + "\n", user=user)
    basic = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    assert_no_secret(login, reg.password, basic)
    config_path = os.path.join(aishell.home, ".docker", "config.json")
    with open(config_path) as f:
        config = json.load(f)
    assert config["auths"][reg.host]["auth"] == basic  # Docker's and podman's format
    if user == "unpriv":
        st = os.stat(config_path)
        assert st.st_uid == aishell.entry.pw_uid
        assert st.st_mode & 0o077 == 0, "the auth file must not be readable by others"

    pull = aishell("pull", ref, user=user)
    assert_no_secret(pull, reg.password, basic)
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))

    aishell("logout", reg.host, user=user)
    with open(config_path) as f:
        assert reg.host not in json.load(f).get("auths", {})
    ref2 = images.push(images.hello, reg, "lib/hello:1")
    assert_one_error(aishell("pull", ref2, user=user, check=False), r"401|unauthori[sz]ed|auth")


def test_htpasswd_with_existing_docker_config(aishell, registry, images):
    reg = registry("htpasswd")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell.write_home_file(".docker/config.json", auth_file(reg.username, reg.password, reg.host),
                            mode=0o600)
    aishell("pull", ref, user="unpriv")
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_htpasswd_with_registry_auth_file(aishell, registry, images):
    reg = registry("htpasswd")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    path = aishell.write_home_file("elsewhere/auth.json",
                                   auth_file(reg.username, reg.password, reg.host), mode=0o600)
    aishell("pull", ref, user="unpriv", env={"REGISTRY_AUTH_FILE": path})
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_htpasswd_with_xdg_runtime_dir_auth_file(aishell, registry, images):
    reg = registry("htpasswd")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell.write_home_file("run/containers/auth.json",
                            auth_file(reg.username, reg.password, reg.host), mode=0o600)
    aishell("pull", ref, user="unpriv",
            env={"XDG_RUNTIME_DIR": os.path.join(aishell.home, "run")})
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_htpasswd_wrong_password_is_one_error(aishell, registry, images):
    reg = registry("htpasswd")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell.write_home_file(".docker/config.json", auth_file(reg.username, "wrong", reg.host),
                            mode=0o600)
    proc = aishell("pull", ref, user="unpriv", check=False)
    assert_one_error(proc, r"401|unauthori[sz]ed|auth")
    assert_no_secret(proc, base64.b64encode(f"{reg.username}:wrong".encode()).decode())


def test_htpasswd_over_tls_with_login(aishell, registry, images):
    reg = registry("htpasswd", tls=True)
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell.install_ca(reg)
    aishell("login", reg.host, "-u", reg.username, "--password-stdin", input=reg.password,
            user="unpriv")
    aishell("pull", ref, user="unpriv")
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_basic_credentials_do_not_follow_a_redirect_from_https_to_http(aishell, registry, images,
                                                                      session_dir):
    # https://127.0.0.1:P sends blob downloads to http://127.0.0.1:P: the same host and port
    # (so the same authority), another scheme. Loopback, so the downgrade itself is allowed;
    # the credentials must not travel over it in clear text.
    reg = registry("htpasswd", tls=True)
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    front = DowngradeFront(reg, workdir=session_dir)
    try:
        aishell.write_home_file(f".aishell/certs.d/{front.host}/ca.crt", open(front.ca_path, "rb").read())
        aishell.write_home_file(".docker/config.json", auth_file(reg.username, reg.password, front.host),
                                mode=0o600)
        name = f"{front.host}/lib/busybox:1"
        proc = aishell("pull", name, user="unpriv")
        assert_pulled(aishell.store, name, images.manifest_digest(images.busybox))
        # The credentials were in use over TLS, and the blobs came over plain HTTP without them.
        assert any("authorization" in h for _, path, h in front.tls_requests if "/manifests/" in path)
        assert front.plain_requests, front.tls_requests
        for method, path, headers in front.plain_requests:
            assert "authorization" not in headers, f"{method} {path} over plain HTTP: {headers}"
        assert_no_secret(proc, reg.password)
    finally:
        front.stop()


@pytest.mark.parametrize("user", USERS)
def test_token_auth_good_credentials(aishell, registry, images, user):
    reg = registry("token")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell.write_home_file(".docker/config.json", auth_file(reg.username, reg.password, reg.host),
                            mode=0o600)
    proc = aishell("pull", ref, user=user)
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))
    assert any(u == reg.username and status == 200
               for _, _, u, status in reg.issuer.requests), reg.issuer.requests
    assert_no_secret(proc, reg.password, *reg.issuer.issued)


def test_token_auth_login_then_pull(aishell, registry, images):
    reg = registry("token")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell("login", reg.host, "-u", reg.username, "--password-stdin", input=reg.password,
            user="unpriv")
    aishell("pull", ref, user="unpriv")
    assert_pulled(aishell.store, ref, images.manifest_digest(images.busybox))


def test_token_auth_bad_credentials(aishell, registry, images):
    reg = registry("token")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    aishell.write_home_file(".docker/config.json", auth_file(reg.username, "nope", reg.host),
                            mode=0o600)
    proc = aishell("pull", ref, user="unpriv", check=False)
    assert_one_error(proc, r"401|unauthori[sz]ed|auth|credential")
    assert any(status == 401 for *_, status in reg.issuer.requests), reg.issuer.requests


def test_token_auth_anonymous_is_refused(aishell, registry, images):
    reg = registry("token")
    ref = images.push(images.busybox, reg, "lib/busybox:1")
    proc = aishell("pull", ref, user="unpriv", check=False)
    assert_one_error(proc, r"401|unauthori[sz]ed|denied|auth")


def test_token_auth_scope_not_granted(aishell, registry, images):
    reg = registry("token")
    ref = images.push(images.busybox, reg, "restricted/busybox:1")
    aishell.write_home_file(".docker/config.json", auth_file(reg.username, reg.password, reg.host),
                            mode=0o600)
    proc = aishell("pull", ref, user="unpriv", check=False)
    assert_one_error(proc, r"401|unauthori[sz]ed|denied|scope|auth")
    assert not os.path.exists(os.path.join(aishell.store, "oci", "index.json")) or \
        ref not in open(os.path.join(aishell.store, "oci", "index.json")).read()


def test_debug_log_redacts_credentials_and_tokens(aishell, registry, images):
    for mode in ("htpasswd", "token"):
        reg = registry(mode)
        ref = images.push(images.busybox, reg, f"lib/{mode}:1")
        aishell.write_home_file(".docker/config.json",
                                auth_file(reg.username, reg.password, reg.host), mode=0o600)
        proc = aishell("--debug", "pull", ref, user="unpriv")
        basic = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
        issued = reg.issuer.issued if reg.issuer else []
        assert_no_secret(proc, reg.password, basic, *issued)
        assert "/v2/" in proc.stderr, "--debug logs the HTTP exchanges"
        if mode == "token":
            assert issued, "the token flow ran"
            signatures = [t.rsplit(".", 1)[1] for t in issued]
            assert_no_secret(proc, *signatures)


def test_auth_file_written_by_login_is_read_by_skopeo(aishell, registry, images):
    """`aishell login` writes the auth file format containers/image reads: skopeo, with that
    file and nothing else, gets into the registry."""
    reg = registry("htpasswd")
    ref = images.push(images.hello, reg, "lib/hello:1")
    aishell("login", reg.host, "-u", reg.username, "--password-stdin", input=reg.password + "\n",
            user="unpriv")
    authfile = os.path.join(aishell.home, ".docker", "config.json")
    proc = subprocess.run(["skopeo", "inspect", "--authfile", authfile, "--tls-verify=false",
                           f"docker://{ref}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Digest"] == images.manifest_digest(images.hello)
    # And without it skopeo is refused, so the file is what let it in.
    empty = os.path.join(aishell.workdir, "empty-auth.json")
    with open(empty, "w") as f:
        f.write("{}")
    proc = subprocess.run(["skopeo", "inspect", "--authfile", empty, "--tls-verify=false",
                           f"docker://{ref}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
