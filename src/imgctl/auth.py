"""Where credentials come from, and keeping them out of every output.

Precedence, per registry:
1. the environment variables the config names (`auth.username_env` / `auth.password_env`);
2. what the user's docker config holds for that registry (an earlier `docker login`);
3. nothing: push anonymously (fine for an open registry).
Only the *source* of a credential is ever shown, never its value.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from imgctl.errors import UsageError

_secrets: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str

    def as_auth_config(self) -> dict[str, str]:
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
