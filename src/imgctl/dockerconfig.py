"""The credentials a user's docker config holds for a registry, found the way the docker CLI finds them.

Read from docker/cli's cli/config/configfile/file.go (GetAuthConfig, GetCredentialsStore) and
cli/config/credentials (the file and native stores):

- the key of a registry is its host, except Docker Hub's, which is `https://index.docker.io/v1/`;
- `credHelpers[key]` names the helper for that registry; else `credsStore` names the default one;
  a configured helper is the only answer for that registry (it saying "not found" means no
  credentials: the docker CLI does not fall back to `auths` then);
- without a helper, `auths[key]`, else the first `auths` key that names the same host
  (`https://host`, `http://host/v1/`, ...);
- an entry's `identitytoken` (and a helper's Username `<token>`) is an OAuth2 refresh token.

The config is `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. Stdlib and subprocess
only: no docker-py, which maps hosts and orders these sources differently and drops identity tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imgctl.errors import ImgctlError
from imgctl.refs import is_docker_hub

HUB_KEY = "https://index.docker.io/v1/"
TOKEN_USERNAME = "<token>"  # a helper's Username when its Secret is an identity token
HELPER_PREFIX = "docker-credential-"
NOT_FOUND = "credentials not found in native keychain"  # docker-credential-helpers' not-found message
HELPER_TIMEOUT = 120.0  # seconds: a helper may wait for a keychain prompt


class CredentialHelperError(ImgctlError):
    hint = (
        "Your docker config names a credential helper (credsStore/credHelpers) that is missing or failing. "
        "Install or fix it, remove that entry from your docker config, or run with --private-docker-config."
    )


class DockerConfigError(ImgctlError):
    hint = "Fix the docker config (or `docker login` again), or run with --private-docker-config."


@dataclass(frozen=True)
class StoredCredentials:
    """What the docker config answered for one registry, and which part of it answered."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(repr=False)
    origin: str  # "credHelpers: docker-credential-x", "credsStore: docker-credential-x" or "auths"

    @property
    def source(self) -> str:
        token = ", identity token" if self.identity_token else ""
        return f"docker config ({self.origin}{token})"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    folder = env.get("DOCKER_CONFIG") or str(Path(env.get("HOME") or Path.home()) / ".docker")
    return Path(folder) / "config.json"


def auth_key(host: str) -> str:
    """The key a registry's credentials are stored under (the docker CLI's getAuthConfigKey; imgctl
    takes every Docker Hub alias that is_docker_hub knows as Docker Hub)."""
    return HUB_KEY if is_docker_hub(host) else host


def convert_to_hostname(key: str) -> str:
    """`https://host:port/v1/` -> `host:port` (the docker CLI's ConvertToHostname)."""
    if "://" in key:
        parts = urlsplit(key)
        if parts.hostname:
            return parts.netloc.rpartition("@")[2]
        key = key.split("://", 1)[1]
    return key.split("/", 1)[0]


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The docker config as a dict; an empty one when there is no file."""
    path = config_path(environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise DockerConfigError(f"cannot read the docker config {path}: {exc}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise DockerConfigError(f"the docker config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DockerConfigError(f"the docker config {path} is not a JSON object")
    return data


def helper_for(config: Mapping[str, Any], key: str) -> tuple[str, str] | None:
    """(helper name, which setting named it) for a registry key: credHelpers[key], else credsStore."""
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict) and isinstance(helpers.get(key), str) and helpers[key]:
        return helpers[key], "credHelpers"
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return store, "credsStore"
    return None


def configured_helpers(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every helper the config names -> the settings naming it (`credsStore`, `credHelpers[host]`)."""
    named: dict[str, list[str]] = {}
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        named.setdefault(store, []).append("credsStore")
    helpers = config.get("credHelpers")
    for key, name in (helpers.items() if isinstance(helpers, dict) else ()):
        if isinstance(name, str) and name:
            named.setdefault(name, []).append(f"credHelpers[{key}]")
    return named


def missing_helpers(environ: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """The helpers the config names that are not on PATH (each with the settings naming it)."""
    path = (os.environ if environ is None else environ).get("PATH")
    return {name: where for name, where in configured_helpers(load(environ)).items() if not shutil.which(HELPER_PREFIX + name, path=path)}


def lookup(host: str, environ: Mapping[str, str] | None = None) -> StoredCredentials | None:
    """The docker config's credentials for `host`, in the docker CLI's order; None if it has none."""
    config = load(environ)
    key = auth_key(host)
    helper = helper_for(config, key)
    if helper is not None:
        name, setting = helper
        return run_helper(name, key, host, setting, environ)
    return from_auths(config, key, host)


def from_auths(config: Mapping[str, Any], key: str, host: str) -> StoredCredentials | None:
    """The `auths` entry for `key`: that very key, else the first key naming the same host."""
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    entry = auths.get(key)
    if entry is None:
        entry = next((value for name, value in auths.items() if convert_to_hostname(name) == key), None)
    if not isinstance(entry, dict):
        return None
    username = entry.get("username") if isinstance(entry.get("username"), str) else ""
    password = entry.get("password") if isinstance(entry.get("password"), str) else ""
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        username, password = _decode_auth(encoded, host)
    token = entry.get("identitytoken")
    identity_token = token if isinstance(token, str) and token else None
    if not username or not (password or identity_token):
        return None
    return StoredCredentials(username, password, identity_token, "auths")


def _decode_auth(encoded: str, host: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise DockerConfigError(f"the docker config's auths entry for {host} has an `auth` that is not base64") from None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        raise DockerConfigError(f"the docker config's auths entry for {host} has an `auth` that is not user:password")
    return username, password.strip("\x00")


def run_helper(
    name: str, key: str, host: str, setting: str = "credsStore", environ: Mapping[str, str] | None = None
) -> StoredCredentials | None:
    """Ask `docker-credential-<name> get` for `key` (the server URL on stdin, JSON on stdout)."""
    program = HELPER_PREFIX + name
    env = dict(os.environ if environ is None else environ)
    found = shutil.which(program, path=env.get("PATH"))
    if found is None:
        raise CredentialHelperError(f"credential helper {program} (from {setting} in your docker config) for {host} is not installed")
    try:
        done = subprocess.run((found, "get"), input=key, capture_output=True, text=True, env=env, timeout=HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CredentialHelperError(f"credential helper {program} for {host} did not answer in {HELPER_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise CredentialHelperError(f"credential helper {program} for {host} could not run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        if done.stdout.strip() == NOT_FOUND:
            return None
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        reason = f": {said[0][:200]}" if said else ""
        raise CredentialHelperError(f"credential helper {program} failed for {host} (exit {done.returncode}){reason}")
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise CredentialHelperError(f"credential helper {program} answered {host} with something that is not a JSON object")
    username, secret = answer.get("Username"), answer.get("Secret")
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        return None
    origin = f"{setting}: {program}"
    if username == TOKEN_USERNAME:
        return StoredCredentials(username, "", secret, origin)
    return StoredCredentials(username, secret, None, origin) if username else None
