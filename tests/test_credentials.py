"""Every credential source, against the real engine and real registries: a real `docker login`
(the docker CLI writes the config), credential helpers on PATH, identity tokens from a token
service; the engine's push and imgctl's own requests use the same credentials."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from imgctl.auth import find_credentials
from imgctl.engine import Engine
from imgctl.plan import PlannedTag
from tests.conftest import AUTH_PASSWORD, AUTH_USER, unique, write_base_context, write_config
from tests.support.registry import RegistryServer
from tests.support.tokenauth import TokenRegistry, TokenService

pytestmark = pytest.mark.engine

HELPER = "imgctltest"


def docker_login(docker_config: Path, host: str, user: str = AUTH_USER, password: str = AUTH_PASSWORD) -> None:
    done = subprocess.run(
        ["docker", "--config", str(docker_config), "login", "-u", user, "--password-stdin", host],
        input=password, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr


def stored_entry(docker_config: Path, host: str) -> dict[str, str]:
    return dict(json.loads((docker_config / "config.json").read_text())["auths"][host])


def one_image_config(tmp_path: Path, host: str, ns: str, **extra: object) -> Path:
    write_base_context(tmp_path / "base")
    return write_config(tmp_path, {"registry": host, "namespace": ns, **extra,
                                   "images": [{"name": "base", "context": "base", "tags": ["{version}", "latest"]}]})


def install_helper(folder: Path, answer: dict[str, str] | None) -> Path:
    """docker-credential-imgctltest in `folder`: logs each URL it is asked for to asked.log, answers
    `answer` (or "not found"). Returns the log."""
    folder.mkdir(exist_ok=True)
    (folder / "answer.json").write_text(json.dumps(answer) if answer else "")
    log = folder / "asked.log"
    script = folder / f"docker-credential-{HELPER}"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = list ]; then echo "{}"; exit 0; fi\n'  # docker-py's classic build lists every store
        '[ "$1" = get ] || { echo "unsupported: $1" >&2; exit 3; }\n'
        "read -r url\n"
        f'printf "%s\\n" "$url" >> "{log}"\n'
        f'if [ -s "{folder}/answer.json" ]; then cat "{folder}/answer.json"; '
        'else echo "credentials not found in native keychain"; exit 1; fi\n'
    )
    script.chmod(0o755)
    return log


def with_path(folder: Path) -> dict[str, str]:
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def no_secret(run_output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in run_output
    assert "Traceback" not in run_output


# -- a real `docker login`, then imgctl with nothing in its environment -----------------------


def test_docker_login_to_htpasswd_registry_then_login_and_release(tmp_path: Path, auth_registry: RegistryServer, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    docker_login(docker_config, auth_registry.host)
    ns = unique()
    config = one_image_config(tmp_path, auth_registry.host, ns)
    login = imgctl("login", "-c", str(config))
    assert login.code == 0, login.output
    assert f"{auth_registry.host}: logged in as {AUTH_USER} (credentials from docker config (auths))" in login.stdout
    release = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json")
    assert release.code == 0, release.output
    assert [(e["registry"], e["username"], e["source"]) for e in release.of_type("logged_in")] == [
        (auth_registry.host, AUTH_USER, "docker config (auths)")]
    assert auth_registry.manifest_digest(f"{ns}/base", "latest") is not None
    assert {e["reference"] for e in release.of_type("verified")} == {
        f"{auth_registry.host}/{ns}/base:1.0.0", f"{auth_registry.host}/{ns}/base:latest"}
    no_secret(login.output + release.output, AUTH_PASSWORD)


def test_docker_login_to_token_registry_then_release(tmp_path: Path, token_registry: TokenRegistry, token_service: TokenService, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    docker_login(docker_config, token_registry.host)
    assert "identitytoken" not in stored_entry(docker_config, token_registry.host)
    ns = unique()
    config = one_image_config(tmp_path, token_registry.host, ns)
    release = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert release.code == 0, release.output
    assert "credentials from docker config (auths)" in release.stderr
    assert token_registry.manifest_digest(f"{ns}/base", "1.0.0") is not None
    pushes = [r for r in token_service.issued(AUTH_USER) if any(":push" in s or ",push" in s for s in r.scopes)]
    assert pushes and all(r.status == 200 for r in pushes)
    no_secret(release.output, AUTH_PASSWORD)


# -- credential helpers on PATH ------------------------------------------------------------


def test_cred_helper_answers_for_login_and_release(tmp_path: Path, auth_registry: RegistryServer, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    bin_dir = tmp_path / "bin"
    log = install_helper(bin_dir, {"ServerURL": auth_registry.host, "Username": AUTH_USER, "Secret": AUTH_PASSWORD})
    # credHelpers wins over a stale auths entry for the same registry
    (docker_config / "config.json").write_text(json.dumps({
        "credHelpers": {auth_registry.host: HELPER},
        "auths": {auth_registry.host: {"auth": "d3Jvbmc6d3JvbmctcGFzc3dvcmQ="}},  # wrong:wrong-password
    }))
    ns = unique()
    config = one_image_config(tmp_path, auth_registry.host, ns)
    login = imgctl("login", "-c", str(config), env=with_path(bin_dir))
    assert login.code == 0, login.output
    assert login.stdout.strip() == (
        f"{auth_registry.host}: logged in as {AUTH_USER} (credentials from docker config (credHelpers: docker-credential-{HELPER}))")
    release = imgctl("release", "-c", str(config), "--version", "1.0.0", "-v", env=with_path(bin_dir))
    assert release.code == 0, release.output
    assert f"credHelpers: docker-credential-{HELPER}" in release.stderr
    assert auth_registry.manifest_digest(f"{ns}/base", "1.0.0") is not None
    # always asked by the registry's host (docker-py's classic build asks it too, for base images)
    assert set(log.read_text().splitlines()) == {auth_registry.host}
    no_secret(login.output + release.output, AUTH_PASSWORD)


def test_creds_store_answers_for_release(tmp_path: Path, auth_registry: RegistryServer, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    bin_dir = tmp_path / "bin"
    log = install_helper(bin_dir, {"ServerURL": auth_registry.host, "Username": AUTH_USER, "Secret": AUTH_PASSWORD})
    (docker_config / "config.json").write_text(json.dumps({"credsStore": HELPER}))
    ns = unique()
    config = one_image_config(tmp_path, auth_registry.host, ns)
    release = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json", env=with_path(bin_dir))
    assert release.code == 0, release.output
    assert [e["source"] for e in release.of_type("logged_in")] == [f"docker config (credsStore: docker-credential-{HELPER})"]
    assert auth_registry.manifest_digest(f"{ns}/base", "latest") is not None
    assert auth_registry.host in log.read_text().splitlines()
    no_secret(release.output, AUTH_PASSWORD)


def test_creds_store_with_nothing_stored_is_anonymous_and_refused(tmp_path: Path, auth_registry: RegistryServer, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    bin_dir = tmp_path / "bin"
    install_helper(bin_dir, None)  # "credentials not found in native keychain"
    (docker_config / "config.json").write_text(json.dumps({"credsStore": HELPER}))
    config = one_image_config(tmp_path, auth_registry.host, unique())
    login = imgctl("login", "-c", str(config), env=with_path(bin_dir))
    assert login.code == 0, login.output
    assert f"{auth_registry.host}: no credentials" in login.stdout
    release = imgctl("release", "-c", str(config), "--version", "1.0.0", env=with_path(bin_dir))
    assert release.code == 1, release.output
    assert "anonymous" in release.output
    no_secret(release.output)


@pytest.mark.parametrize("setting", ["credHelpers", "credsStore"])
def test_missing_helper_is_a_clear_error(setting: str, tmp_path: Path, auth_registry: RegistryServer, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    named = {"credHelpers": {auth_registry.host: "imgctl-no-such-helper"}} if setting == "credHelpers" else {"credsStore": "imgctl-no-such-helper"}
    (docker_config / "config.json").write_text(json.dumps(named))
    config = one_image_config(tmp_path, auth_registry.host, unique())
    for run in (imgctl("login", "-c", str(config)), imgctl("release", "-c", str(config), "--version", "1.0.0")):
        assert run.code == 1, run.output
        assert "docker-credential-imgctl-no-such-helper" in run.stderr
        assert setting in run.stderr and "--private-docker-config" in run.stderr
        no_secret(run.output)
    login = imgctl("login", "-c", str(config))
    assert auth_registry.host in login.stderr  # names the registry it was asked for


def test_failing_helper_names_helper_and_registry(tmp_path: Path, auth_registry: RegistryServer, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / f"docker-credential-{HELPER}"
    script.write_text("#!/bin/sh\necho 'keychain locked' >&2\nexit 2\n")
    script.chmod(0o755)
    (docker_config / "config.json").write_text(json.dumps({"credHelpers": {auth_registry.host: HELPER}}))
    config = one_image_config(tmp_path, auth_registry.host, unique())
    run = imgctl("login", "-c", str(config), env=with_path(bin_dir))
    assert run.code == 1, run.output
    assert f"error: credential helper docker-credential-{HELPER} failed for {auth_registry.host} (exit 2): keychain locked" in run.stderr
    no_secret(run.output)


# -- identity tokens (OAuth2 refresh tokens) --------------------------------------------------


def refresh_token_login(docker_config: Path, token_registry: TokenRegistry, token_service: TokenService) -> str:
    token_service.refresh_tokens = True
    docker_login(docker_config, token_registry.host)
    entry = stored_entry(docker_config, token_registry.host)
    assert entry["identitytoken"].startswith("rt-"), entry.keys()
    return entry["identitytoken"]


def build_and_tag(tmp_path: Path, reference: str) -> None:
    write_base_context(tmp_path / "ctx")
    done = subprocess.run(["docker", "build", "-q", "-t", reference, str(tmp_path / "ctx")], capture_output=True, text=True,
                          env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=120)
    assert done.returncode == 0, done.stderr


def test_identity_token_goes_to_the_engine_push(tmp_path: Path, token_registry: TokenRegistry, token_service: TokenService, docker_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = refresh_token_login(docker_config, token_registry, token_service)
    ns = unique()
    repository = f"{token_registry.host}/{ns}/base"
    build_and_tag(tmp_path, f"{repository}:1.0.0")
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    creds = find_credentials(token_registry.host, None, None)
    assert creds is not None and creds.identity_token == token and creds.password == ""
    assert creds.as_auth_config() == {"username": AUTH_USER, "identitytoken": token}
    before = len(token_service.issued())
    engine = Engine()
    engine.login(token_registry.host, creds)  # the engine's POST /auth runs the refresh-token flow
    digest, _size = engine.push("base", PlannedTag("t", token_registry.host, repository, f"{ns}/base", "1.0.0", False), creds, lambda event: None)
    assert token_registry.manifest_digest(f"{ns}/base", "1.0.0") == digest
    traded = token_service.issued()[before:]
    assert traded and all(r.method == "POST" and r.grant_type == "refresh_token" and r.user == AUTH_USER for r in traded), traded
    assert any(r.status == 200 and any("push" in s for s in r.scopes) for r in traded)


def test_identity_token_login_names_the_source(tmp_path: Path, token_registry: TokenRegistry, token_service: TokenService, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    token = refresh_token_login(docker_config, token_registry, token_service)
    config = one_image_config(tmp_path, token_registry.host, unique())
    login = imgctl("login", "-c", str(config))
    assert login.code == 0, login.output
    assert login.stdout.strip() == f"{token_registry.host}: logged in as {AUTH_USER} (credentials from docker config (auths, identity token))"
    no_secret(login.output, token, AUTH_PASSWORD)


def test_stale_identity_token_is_refused_at_login(tmp_path: Path, token_registry: TokenRegistry, token_service: TokenService, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    refresh_token_login(docker_config, token_registry, token_service)
    stored = json.loads((docker_config / "config.json").read_text())
    stored["auths"][token_registry.host]["identitytoken"] = "rt-revoked-long-ago-0000"
    (docker_config / "config.json").write_text(json.dumps(stored))
    config = one_image_config(tmp_path, token_registry.host, unique())
    login = imgctl("login", "-c", str(config))
    assert login.code == 1, login.output
    assert f"registry {token_registry.host} refused user '{AUTH_USER}' (credentials from docker config (auths, identity token))" in login.stderr
    no_secret(login.output, "rt-revoked-long-ago-0000")


def test_identity_token_from_a_helper_goes_to_the_engine_push(tmp_path: Path, token_registry: TokenRegistry, token_service: TokenService, docker_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "login-config").mkdir()  # a refresh token from a real login, handed out by the helper
    token = refresh_token_login(tmp_path / "login-config", token_registry, token_service)
    bin_dir = tmp_path / "bin"
    install_helper(bin_dir, {"ServerURL": token_registry.host, "Username": "<token>", "Secret": token})
    (docker_config / "config.json").write_text(json.dumps({"credHelpers": {token_registry.host: HELPER}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.setenv("PATH", with_path(bin_dir)["PATH"])
    creds = find_credentials(token_registry.host, None, None)
    assert creds is not None and creds.identity_token == token
    assert creds.source == f"docker config (credHelpers: docker-credential-{HELPER}, identity token)"
    ns = unique()
    repository = f"{token_registry.host}/{ns}/base"
    build_and_tag(tmp_path, f"{repository}:2.0.0")
    before = len(token_service.issued())
    digest, _ = Engine().push("base", PlannedTag("t", token_registry.host, repository, f"{ns}/base", "2.0.0", False), creds, lambda event: None)
    assert token_registry.manifest_digest(f"{ns}/base", "2.0.0") == digest
    assert all(r.grant_type == "refresh_token" for r in token_service.issued()[before:])


def test_identity_token_release_end_to_end(tmp_path: Path, token_registry: TokenRegistry, token_service: TokenService, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    """Needs imgctl's own registry client to trade the identity token too (verification, tags)."""
    token = refresh_token_login(docker_config, token_registry, token_service)
    ns = unique()
    config = one_image_config(tmp_path, token_registry.host, ns)
    release = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json")
    assert release.code == 0, release.output
    assert [e["source"] for e in release.of_type("logged_in")] == ["docker config (auths, identity token)"]
    assert {e["reference"] for e in release.of_type("verified")} == {
        f"{token_registry.host}/{ns}/base:1.0.0", f"{token_registry.host}/{ns}/base:latest"}
    assert all(r.grant_type == "refresh_token" for r in token_service.issued(AUTH_USER) if r.method == "POST")
    no_secret(release.output, token, AUTH_PASSWORD)
