"""Where credentials come from, and keeping them out of every output.

find_credentials is the one place that decides, per registry (its docstring lists the order).
The engine's push and imgctl's own registry requests get the very same Credentials.
Only the *source* of a credential is ever shown, never its value.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from imgctl import dockerconfig
from imgctl.errors import UsageError

_secrets: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Credentials:
    """A user and a password, or a user and an identity token (an OAuth2 refresh token, used
    instead of the password); `source` says where they came from, for messages."""

    username: str
    password: str = field(repr=False)
    source: str
    identity_token: str | None = field(default=None, repr=False)

    def as_auth_config(self) -> dict[str, str]:
        """The engine's AuthConfig: with an identity token the daemon runs the refresh-token flow itself."""
        if self.identity_token:
            return {"username": self.username, "identitytoken": self.identity_token}
        return {"username": self.username, "password": self.password}


def remember_secret(value: str) -> None:
    """Register a value that must never be printed; renderers and the error boundary redact it."""
    if len(value) >= 4:
        with _lock:
            _secrets.add(value)


def known_secrets() -> tuple[str, ...]:
    with _lock:
        return tuple(_secrets)


def redact(text: str) -> str:
    for secret in known_secrets():
        if secret in text:
            text = text.replace(secret, "***")
    return text


def from_environment(
    host: str, username_env: str | None, password_env: str | None, environ: dict[str, str] | None = None
) -> Credentials | None:
    """Credentials from the named variables; None if neither is set; an error if only one is."""
    env = os.environ if environ is None else environ
    if not username_env or not password_env:
        return None
    username, password = env.get(username_env, ""), env.get(password_env, "")
    if password:
        remember_secret(password)
    if username and password:
        return Credentials(username, password, f"environment ({username_env}/{password_env})")
    if username or password:
        missing, given = (password_env, username_env) if username else (username_env, password_env)
        raise UsageError(
            f"credentials for {host}: {given} is set but {missing} is not",
            hint=f"Set both {username_env} and {password_env}, or neither to use your docker config.",
        )
    return None


def find_credentials(
    host: str, username_env: str | None, password_env: str | None, environ: dict[str, str] | None = None
) -> Credentials | None:
    """The credentials for `host`, from the first source that has them:

    1. the environment variables the config names (`auth.username_env` / `auth.password_env`),
       both set; only one of them set is an error;
    2. the docker config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), in the
       docker CLI's order (see dockerconfig):
       a. `credHelpers[host]`: that registry's credential helper;
       b. `credsStore`: the default credential helper;
       c. `auths[host]` (or a key naming the same host, e.g. `https://host/v1/`), with its
          `identitytoken` if it has one;
       Docker Hub's key is `https://index.docker.io/v1/`. A helper named by (a) or (b) is the only
       answer of the docker config: its "not found" is not followed by (c), as in the docker CLI;
    3. none: None (anonymous).

    A helper that is missing or fails is an error naming it and the registry. Every secret found
    is registered with remember_secret; the result's `source` names where it came from.
    """
    found = from_environment(host, username_env, password_env, environ)
    if found is not None:
        return found
    stored = dockerconfig.lookup(host, environ)
    if stored is None:
        return None
    for secret in (stored.password, stored.identity_token):
        if secret:
            remember_secret(secret)
    return Credentials(stored.username, stored.password, stored.source, stored.identity_token)
