"""Token auth as Docker Hub runs it, against a real docker-registry in `auth: token` mode whose
JWTs come from the token service in tests/support/tokenauth.py (verified by the registry for
real: signature, audience, issuer, expiry)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from imgctl.auth import Credentials
from imgctl.errors import AuthFailed
from imgctl.registry import RegistryClient
from imgctl.registry_auth import _renew_in, parse_challenge
from tests.conftest import AUTH_PASSWORD, AUTH_USER, chain_config, unique
from tests.support.tokenauth import TokenRegistry, TokenService
from tests.test_release import two_image_config

ENV = {"REG_USER": AUTH_USER, "REG_TOKEN": AUTH_PASSWORD}
AUTH = {"auth": {"username_env": "REG_USER", "password_env": "REG_TOKEN"}}


def _imgctl_scopes(service: TokenService) -> list[tuple[str, ...]]:
    return [r.scopes for r in service.issued(agent="imgctl/")]


@pytest.mark.engine
def test_two_image_release_with_floating_tags(tmp_path: Path, token_registry: TokenRegistry, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = two_image_config(tmp_path, token_registry.host, ns, **AUTH)
    run = imgctl("release", "-c", str(config), "--version", "1.4.2", "--output", "json", env=ENV)
    assert run.code == 0, run.output
    assert sorted(token_registry.tags(f"{ns}/base")) == ["1.4.2", "latest"]
    assert sorted(token_registry.tags(f"{ns}/app")) == ["1.4", "1.4.2", "latest"]
    for event in run.of_type("verified") + run.of_type("tag_added"):
        repo, tag = event["reference"].split("/", 1)[1].rsplit(":", 1)
        assert token_registry.manifest_digest(repo, tag) == event["digest"]
    scopes = _imgctl_scopes(token_registry.service)
    # one request proves push access to both repositories before anything is built ...
    assert (f"repository:{ns}/base:pull,push", f"repository:{ns}/app:pull,push") in scopes
    # ... and the tags imgctl adds itself (latest, 1.4) are written with a push token, never a pull one
    assert run.of_type("tag_added"), run.output
    assert not run.of_type("retrying")
    assert AUTH_PASSWORD not in run.output


@pytest.mark.engine
def test_a_release_that_outlives_its_tokens(tmp_path: Path, token_registry: TokenRegistry, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Tokens live 3 s here; the second image builds for 5 s, so every token imgctl took for the
    first image is dead by the time the release verifies and sets the floating tags."""
    token_registry.service.lifetime = 3
    ns = unique()
    config = chain_config(tmp_path, token_registry.host, ns, {"slow": "RUN sleep 5\n"}, **AUTH)
    run = imgctl("release", "-c", str(config), "--version", "2.5.0", "--output", "json", env=ENV)
    assert run.code == 0, run.output
    for name in ("base", "slow"):
        assert sorted(token_registry.tags(f"{ns}/{name}")) == ["2.5.0", "latest"]
    base_push = f"repository:{ns}/base:pull,push"
    assert sum(base_push in scopes for scopes in _imgctl_scopes(token_registry.service)) >= 2  # renewed, not kept


@pytest.mark.engine
def test_a_token_the_registry_stops_taking_is_renewed_once(tmp_path: Path, token_registry: TokenRegistry, imgctl) -> None:  # type: ignore[no-untyped-def]
    """expires_in says 300 s but the registry takes each token for 2 s only: the 401 that follows
    renews it, once per request."""
    service = token_registry.service
    service.lies_about_lifetime = 2
    ns = unique()
    config = chain_config(tmp_path, token_registry.host, ns, {"slow": "RUN sleep 4\n"}, **AUTH)
    run = imgctl("release", "-c", str(config), "--version", "2.5.0", env=ENV)
    assert run.code == 0, run.output
    assert sorted(token_registry.tags(f"{ns}/base")) == ["2.5.0", "latest"]
    base_push = f"repository:{ns}/base:pull,push"
    assert sum(base_push in scopes for scopes in _imgctl_scopes(service)) >= 2, service.requests


@pytest.mark.engine
def test_anonymous_reads(tmp_path: Path, token_registry: TokenRegistry, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = two_image_config(tmp_path, token_registry.host, ns, **AUTH)
    assert imgctl("release", "-c", str(config), "--version", "1.0.0", env=ENV).code == 0
    pushed = token_registry.manifest_digest(f"{ns}/app", "1.0.0")

    anonymous = RegistryClient(token_registry.host, None)
    assert anonymous.manifest_digest(f"{ns}/app", "1.0.0") == pushed
    assert anonymous.manifest_digest(f"{ns}/app", "no-such-tag") is None
    assert anonymous.stored_size(f"{ns}/app", "1.0.0")
    asked = token_registry.service.issued(agent="imgctl/")[-1]
    assert asked.user is None and asked.scopes == (f"repository:{ns}/app:pull",)

    with pytest.raises(AuthFailed, match=f"registry {token_registry.host} refused anonymous access writing"):
        anonymous.add_tag(f"{ns}/app", pushed or "", "stolen")

    token_registry.service.anonymous_pull = False
    closed = RegistryClient(token_registry.host, None)
    with pytest.raises(AuthFailed, match="refused anonymous access reading"):
        closed.manifest_digest(f"{ns}/app", "1.0.0")

    # an anonymous release reads anonymously, then the push is refused: exit 1, no retries
    run = imgctl("release", "-c", str(config), "--version", "1.0.1")
    assert run.code == 1, run.output
    assert f"registry {token_registry.host} refused anonymous push" in run.output
    assert "retry" not in run.output.lower()


@pytest.mark.engine
def test_a_wrong_password_fails_fast_without_retries(tmp_path: Path, token_registry: TokenRegistry, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = two_image_config(tmp_path, token_registry.host, ns, **AUTH)
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json",
                 env={"REG_USER": AUTH_USER, "REG_TOKEN": "not-the-password-123"})
    assert run.code == 1, run.output
    assert f"registry {token_registry.host} refused user '{AUTH_USER}'" in run.stderr
    assert "REG_USER/REG_TOKEN" in run.stderr  # where the credentials came from
    assert not run.of_type("retrying") and not run.of_type("image_started")  # nothing built
    refused = [r for r in token_registry.service.requests if r.agent.startswith("imgctl/")]
    assert [r.status for r in refused] == [401]
    assert "not-the-password-123" not in run.output and "Traceback" not in run.output


@pytest.mark.engine
@pytest.mark.parametrize("token_field", ["token", "access_token"])
def test_either_token_field_and_no_expires_in(token_field: str, tmp_path: Path, engine: None) -> None:
    service = TokenService(users={AUTH_USER: AUTH_PASSWORD}, token_field=token_field, send_expires_in=False).start()
    try:
        with TokenRegistry(tmp_path / "registry", service) as registry:
            client = RegistryClient(registry.host, Credentials(AUTH_USER, AUTH_PASSWORD, "test"))
            assert client.manifest_digest("ns/none", "1") is None
            assert client.manifest_digest("ns/none", "2") is None
            assert len(service.issued()) == 1  # the default 60 s life: one token for both
    finally:
        service.stop()


def test_challenges_are_parsed_as_the_registries_send_them() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:ns/app:pull"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:ns/app:pull"}
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert parse_challenge("Bearer realm=https://h/t,service=s") == ("bearer", {"realm": "https://h/t", "service": "s"})
    assert parse_challenge("") == ("", {})


def test_renewal_time_honours_expires_in_and_issued_at() -> None:
    assert _renew_in({"expires_in": 300}) == 290
    assert _renew_in({}) == 50  # 60 s when absent
    assert _renew_in({"expires_in": 5}) == 4  # a fifth of a short life, not 10 s
    issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 100))
    assert 185 <= _renew_in({"expires_in": 300, "issued_at": issued}) <= 190
    assert _renew_in({"expires_in": 30, "issued_at": issued}) == 0  # already dead
    assert _renew_in({"expires_in": "garbage"}) == 50


@pytest.mark.engine
def test_a_namespace_of_several_segments(tmp_path: Path, token_registry: TokenRegistry, imgctl) -> None:  # type: ignore[no-untyped-def]
    """ghcr.io/org/team/app, GitLab's groups and subgroups: every scope names the whole path."""
    ns = f"{unique()}/team/sub"
    config = two_image_config(tmp_path, token_registry.host, ns, **AUTH)
    run = imgctl("release", "-c", str(config), "--version", "3.1.0", env=ENV)
    assert run.code == 0, run.output
    assert sorted(token_registry.tags(f"{ns}/app")) == ["3.1", "3.1.0", "latest"]
    assert (f"repository:{ns}/base:pull,push", f"repository:{ns}/app:pull,push") in _imgctl_scopes(token_registry.service)
    subprocess.run(["docker", "rmi", f"{token_registry.host}/{ns}/app:3.1.0"], capture_output=True)
    pulled = subprocess.run(["docker", "pull", "-q", f"{token_registry.host}/{ns}/app:3.1.0"], capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr  # the docker CLI, anonymously: the service allows pull
    ran = subprocess.run(["docker", "run", "--rm", f"{token_registry.host}/{ns}/app:3.1.0"], capture_output=True, text=True)
    assert ran.stdout.strip() == "hello 3.1.0", ran.stderr
