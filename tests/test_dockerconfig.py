"""The docker config's credentials, found as the docker CLI finds them: temp config dirs and small
credential helpers on a private PATH; no engine, no network (Docker Hub is never contacted)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from imgctl import auth, dockerconfig
from imgctl.auth import Credentials, find_credentials
from imgctl.dockerconfig import HUB_KEY, CredentialHelperError, DockerConfigError, lookup
from imgctl.errors import UsageError

HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose docker config is tmp_path/docker/config.json and whose PATH has tmp_path/bin."""
    (tmp_path / "docker").mkdir()
    (tmp_path / "bin").mkdir()
    return {"DOCKER_CONFIG": str(tmp_path / "docker"), "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}


def write(env: dict[str, str], config: dict[str, object]) -> None:
    Path(env["DOCKER_CONFIG"], "config.json").write_text(json.dumps(config))


def helper(env: dict[str, str], name: str, *, answer: dict[str, str] | None = None, fail: str | None = None) -> Path:
    """docker-credential-<name>: logs the server URL it is asked for to <name>.asked, then answers."""
    folder = Path(env["PATH"].split(":")[0])
    script = folder / f"docker-credential-{name}"
    log = folder / f"{name}.asked"
    if fail is not None:
        body = f"echo '{fail}'; exit 1"
    else:
        body = f"cat <<'EOF'\n{json.dumps(answer)}\nEOF"
    script.write_text(
        f'#!/bin/sh\n[ "$1" = get ] || exit 3\nread -r url\nprintf "%s\\n" "$url" >> "{log}"\n{body}\n'
    )
    script.chmod(0o755)
    return log


def asked(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# -- auths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HUB_ALIASES)
def test_docker_hub_key_answers_for_every_hub_alias(home: dict[str, str], host: str) -> None:
    write(home, {"auths": {HUB_KEY: {"auth": b64("hubuser:hub-token-1234")}, "ghcr.io": {"auth": b64("gh:gh-token-5678")}}})
    found = lookup(host, home)
    assert found is not None and (found.username, found.password) == ("hubuser", "hub-token-1234")
    assert found.source == "docker config (auths)"


def test_hub_key_is_not_some_other_registry(home: dict[str, str]) -> None:
    write(home, {"auths": {HUB_KEY: {"auth": b64("hubuser:hub-token-1234")}}})
    assert lookup("ghcr.io", home) is None
    assert lookup("index.docker.io.example.com", home) is None


@pytest.mark.parametrize("key", ["reg.example:5000", "https://reg.example:5000", "http://reg.example:5000/v1/", "https://reg.example:5000/v2/"])
def test_auths_key_forms_name_the_same_host(home: dict[str, str], key: str) -> None:
    write(home, {"auths": {key: {"auth": b64("u:p4ssword")}}})
    found = lookup("reg.example:5000", home)
    assert found is not None and found.password == "p4ssword"
    assert lookup("reg.example", home) is None  # another port is another registry
    assert lookup("reg.example:5001", home) is None


def test_exact_key_wins_over_a_url_key(home: dict[str, str]) -> None:
    write(home, {"auths": {"https://reg.example": {"auth": b64("url:from-url-key")}, "reg.example": {"auth": b64("host:from-host-key")}}})
    found = lookup("reg.example", home)
    assert found is not None and found.username == "host"


def test_localhost_and_loopback_address_are_different_registries(home: dict[str, str]) -> None:
    write(home, {"auths": {"localhost:5000": {"auth": b64("u:p4ssword")}}})
    assert lookup("localhost:5000", home) is not None
    assert lookup("127.0.0.1:5000", home) is None


def test_identity_token_entry_is_kept(home: dict[str, str]) -> None:
    # what `docker login` writes after a token server handed it a refresh token
    write(home, {"auths": {"reg.example": {"auth": b64("imgctl-ci:"), "identitytoken": "rt-abcdefgh"}}})
    found = find_credentials("reg.example", None, None, home)
    assert found == Credentials("imgctl-ci", "", "docker config (auths, identity token)", "rt-abcdefgh")
    assert found.as_auth_config() == {"username": "imgctl-ci", "identitytoken": "rt-abcdefgh"}
    assert "rt-abcdefgh" in auth.known_secrets()
    assert "rt-abcdefgh" not in repr(found)


def test_username_and_password_fields_and_empty_entries(home: dict[str, str]) -> None:
    write(home, {"auths": {"a.example": {"username": "u", "password": "plain-pass"}, "b.example": {}, "c.example": {"auth": ""}}})
    found = lookup("a.example", home)
    assert found is not None and (found.username, found.password) == ("u", "plain-pass")
    assert lookup("b.example", home) is None
    assert lookup("c.example", home) is None


def test_a_broken_auth_is_an_error_naming_the_registry_not_the_value(home: dict[str, str]) -> None:
    write(home, {"auths": {"reg.example": {"auth": "%%%not-base64"}}})
    with pytest.raises(DockerConfigError, match="auths entry for reg.example") as raised:
        lookup("reg.example", home)
    assert "%%%not-base64" not in raised.value.message
    write(home, {"auths": {"reg.example": {"auth": b64("no-colon-here")}}})
    with pytest.raises(DockerConfigError, match="not user:password"):
        lookup("reg.example", home)


def test_no_file_is_no_credentials_and_bad_json_is_an_error(home: dict[str, str]) -> None:
    assert lookup("reg.example", home) is None
    Path(home["DOCKER_CONFIG"], "config.json").write_text("{not json")
    with pytest.raises(DockerConfigError, match="not valid JSON"):
        lookup("reg.example", home)


def test_config_path_is_docker_config_else_home(tmp_path: Path) -> None:
    assert dockerconfig.config_path({"DOCKER_CONFIG": "/x/y", "HOME": "/h"}) == Path("/x/y/config.json")
    assert dockerconfig.config_path({"HOME": "/h"}) == Path("/h/.docker/config.json")


def test_convert_to_hostname() -> None:
    assert dockerconfig.convert_to_hostname("https://index.docker.io/v1/") == "index.docker.io"
    assert dockerconfig.convert_to_hostname("http://127.0.0.1:5000/v1/") == "127.0.0.1:5000"
    assert dockerconfig.convert_to_hostname("reg.example/path") == "reg.example"
    assert dockerconfig.convert_to_hostname("[::1]:5000") == "[::1]:5000"


# -- helpers ---------------------------------------------------------------------------------


def test_cred_helper_for_the_registry_wins_over_creds_store_and_auths(home: dict[str, str]) -> None:
    per_registry = helper(home, "perreg", answer={"ServerURL": "reg.example", "Username": "helper-user", "Secret": "helper-secret-1"})
    default = helper(home, "default", answer={"ServerURL": "x", "Username": "store-user", "Secret": "store-secret-1"})
    write(home, {"credHelpers": {"reg.example": "perreg"}, "credsStore": "default", "auths": {"reg.example": {"auth": b64("file:file-pass")}}})
    found = find_credentials("reg.example", None, None, home)
    assert found == Credentials("helper-user", "helper-secret-1", "docker config (credHelpers: docker-credential-perreg)")
    assert asked(per_registry) == ["reg.example"] and asked(default) == []
    assert "helper-secret-1" in auth.known_secrets()
    other = find_credentials("other.example", None, None, home)  # no credHelpers entry: the default store
    assert other is not None and other.source == "docker config (credsStore: docker-credential-default)"
    assert asked(default) == ["other.example"]


def test_creds_store_wins_over_auths_and_its_not_found_is_final(home: dict[str, str]) -> None:
    # As the docker CLI: once a helper is configured for a registry, `auths` is not consulted.
    log = helper(home, "empty", fail=dockerconfig.NOT_FOUND)
    write(home, {"credsStore": "empty", "auths": {"reg.example": {"auth": b64("file:file-pass")}}})
    assert lookup("reg.example", home) is None
    assert asked(log) == ["reg.example"]


def test_helper_is_asked_for_docker_hub_by_its_key(home: dict[str, str]) -> None:
    log = helper(home, "hub", answer={"Username": "hubuser", "Secret": "hub-secret-99"})
    write(home, {"credHelpers": {HUB_KEY: "hub"}})
    for host in HUB_ALIASES:
        found = lookup(host, home)
        assert found is not None and found.username == "hubuser"
    assert asked(log) == [HUB_KEY] * len(HUB_ALIASES)
    write(home, {"credHelpers": {"docker.io": "hub"}})  # the docker CLI looks Hub up by its key only
    assert lookup("docker.io", home) is None


def test_helper_token_username_means_identity_token(home: dict[str, str]) -> None:
    helper(home, "acr", answer={"ServerURL": "reg.example", "Username": "<token>", "Secret": "rt-from-helper"})
    write(home, {"credHelpers": {"reg.example": "acr"}})
    found = find_credentials("reg.example", None, None, home)
    assert found is not None and found.identity_token == "rt-from-helper" and found.password == ""
    assert found.source == "docker config (credHelpers: docker-credential-acr, identity token)"
    assert found.as_auth_config() == {"username": "<token>", "identitytoken": "rt-from-helper"}


def test_missing_helper_is_an_error_naming_helper_and_registry(home: dict[str, str]) -> None:
    write(home, {"credHelpers": {"reg.example": "nosuch"}})
    with pytest.raises(CredentialHelperError) as raised:
        find_credentials("reg.example", None, None, home)
    assert "docker-credential-nosuch" in raised.value.message and "reg.example" in raised.value.message
    assert "credHelpers" in raised.value.message and raised.value.exit_code == 1
    assert dockerconfig.missing_helpers(home) == {"nosuch": ["credHelpers[reg.example]"]}


def test_failing_helper_is_an_error_with_its_words(home: dict[str, str]) -> None:
    helper(home, "broken", fail="the keychain is locked")
    write(home, {"credsStore": "broken"})
    with pytest.raises(CredentialHelperError, match=r"docker-credential-broken failed for reg.example \(exit 1\): the keychain is locked"):
        lookup("reg.example", home)


def test_helper_answering_garbage_is_an_error(home: dict[str, str]) -> None:
    script = Path(home["PATH"].split(":")[0]) / "docker-credential-garbage"
    script.write_text("#!/bin/sh\necho not-json\n")
    script.chmod(0o755)
    write(home, {"credsStore": "garbage"})
    with pytest.raises(CredentialHelperError, match="not a JSON object"):
        lookup("reg.example", home)


def test_missing_helpers_lists_every_setting(home: dict[str, str]) -> None:
    helper(home, "present", answer={"Username": "u", "Secret": "s3cret"})
    write(home, {"credsStore": "gone", "credHelpers": {"a.example": "gone", "b.example": "present", "c.example": "also-gone"}})
    assert dockerconfig.missing_helpers(home) == {"gone": ["credsStore", "credHelpers[a.example]"], "also-gone": ["credHelpers[c.example]"]}


# -- the precedence as a whole ------------------------------------------------------------------


def test_environment_wins_over_the_docker_config(home: dict[str, str]) -> None:
    log = helper(home, "store", answer={"Username": "store-user", "Secret": "store-secret-1"})
    write(home, {"credsStore": "store"})
    env = {**home, "REG_USER": "env-user", "REG_TOKEN": "env-token-1234"}
    found = find_credentials("reg.example", "REG_USER", "REG_TOKEN", env)
    assert found == Credentials("env-user", "env-token-1234", "environment (REG_USER/REG_TOKEN)")
    assert asked(log) == []  # the helper was not even asked
    found = find_credentials("reg.example", "REG_USER", "REG_TOKEN", home)  # neither set: the docker config
    assert found is not None and found.username == "store-user"
    with pytest.raises(UsageError, match="REG_USER is set but REG_TOKEN is not"):
        find_credentials("reg.example", "REG_USER", "REG_TOKEN", {**home, "REG_USER": "env-user"})


def test_nothing_anywhere_is_none(home: dict[str, str]) -> None:
    write(home, {"auths": {"other.example": {"auth": b64("u:p4ssword")}}})
    assert find_credentials("reg.example", "REG_USER", "REG_TOKEN", home) is None


def test_credentials_repr_and_auth_config() -> None:
    plain = Credentials("u", "pa55word-x", "environment (A/B)")
    assert "pa55word-x" not in repr(plain)
    assert plain.as_auth_config() == {"username": "u", "password": "pa55word-x"}


def test_default_environment_is_the_process_one(home: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    write(home, {"auths": {"reg.example": {"auth": b64("u:p4ssword")}}})
    for name, value in home.items():
        monkeypatch.setenv(name, value)
    assert os.environ["DOCKER_CONFIG"] == home["DOCKER_CONFIG"]
    found = find_credentials("reg.example", None, None)
    assert found is not None and found.username == "u"
