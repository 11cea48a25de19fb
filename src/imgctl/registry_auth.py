"""How imgctl proves who it is to a registry: Basic auth, or Bearer tokens from the registry's realm.

Token auth as Docker Hub, GHCR, Quay, Harbor, GAR and GitLab run it (the distribution token
spec): a request without a token gets 401 and `WWW-Authenticate: Bearer realm=..,service=..`.
imgctl then asks the realm for the scopes the *operation* needs (`pull` to read, `pull,push` to
write, several `scope=` parameters when it touches several repositories), not the scope the
challenge names: a GET is challenged for `pull`, and the manifest PUT that follows needs push.
Tokens live `expires_in` seconds (60 when absent) from `issued_at`; they are renewed before
they expire, and once more when the registry still answers 401. A docker config
`identitytoken` is an OAuth2 refresh token: it is POSTed to the realm (`grant_type=refresh_token`)
in place of a password, as the docker CLI and the daemon do.
"""

from __future__ import annotations

import base64
import datetime
import re
import threading
import time
from dataclasses import dataclass

import requests

from imgctl.auth import Credentials, remember_secret
from imgctl.errors import AuthFailed, RegistryError
from imgctl.retry import parse_retry_after

DEFAULT_LIFETIME = 60.0  # what the token spec says a token without expires_in lives
RENEW_MARGIN = 10.0  # renew this long before expiry (at most a fifth of the token's life)
CLIENT_ID = "imgctl"

Scope = tuple[str, str]  # (repository path, "pull" | "pull,push")


def scope_text(scope: Scope) -> str:
    return f"repository:{scope[0]}:{scope[1]}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme in lower case, parameters) of a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v if v else bare for k, v, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]*))', rest)}
    return scheme.lower(), params


def retry_after(response: requests.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


@dataclass
class _Token:
    value: str
    scopes: frozenset[tuple[str, str]]  # (repository, action) pairs it grants
    renew_at: float  # time.monotonic()


def _grants(scopes: tuple[Scope, ...]) -> frozenset[tuple[str, str]]:
    return frozenset((path, action) for path, actions in scopes for action in actions.split(","))


class RegistryAuth:
    """The Authorization header for a registry's requests; thread-safe, one per registry."""

    def __init__(self, host: str, base: str, creds: Credentials | None, session: requests.Session, *, timeout: float) -> None:
        self.host = host
        self.base = base
        self.creds = creds
        self.session = session
        self.timeout = timeout
        self._scheme: str | None = None  # None until the registry challenged: send nothing first
        self._params: dict[str, str] = {}
        self._tokens: list[_Token] = []
        self._lock = threading.Lock()
        self._fetching: dict[frozenset[tuple[str, str]], threading.Lock] = {}

    @property
    def who(self) -> str:
        if self.creds is None:
            return "anonymous access"
        return f"user {self.creds.username!r} (credentials from {self.creds.source})"

    def header(self, scopes: tuple[Scope, ...]) -> str | None:
        """What to send for a request needing `scopes`; None before any challenge (or for anonymous Basic)."""
        if self._scheme == "basic":
            return self._basic() if self.creds else None
        if self._scheme != "bearer":
            return None
        wanted = _grants(scopes)
        token = self._cached(wanted)
        if token is not None:
            return f"Bearer {token.value}"
        with self._lock:
            lock = self._fetching.setdefault(wanted, threading.Lock())
        with lock:  # one request to the realm per scope set, however many threads ask at once
            token = self._cached(wanted) or self._fetch(scopes)
        return f"Bearer {token.value}"

    def challenged(self, response: requests.Response, scopes: tuple[Scope, ...], *, sent: str | None) -> bool:
        """The registry answered 401: learn its scheme, forget a token it refused; True to send again."""
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme not in ("basic", "bearer"):
            return False
        first = self._scheme is None
        with self._lock:
            self._scheme, self._params = scheme, params or self._params
            if sent is not None:
                self._tokens = [t for t in self._tokens if f"Bearer {t.value}" != sent]
        if scheme == "basic":
            return first and self.creds is not None
        return True

    def check(self, scopes: tuple[Scope, ...]) -> None:
        """Ask for `scopes` now (the release's pushes), so a wrong password fails before any build."""
        url = f"{self.base}/v2/"
        try:
            response = self.session.get(url, timeout=self.timeout)
            if response.status_code == 401 and self.challenged(response, scopes, sent=None):
                if self._scheme == "basic":
                    sent = self._basic()
                    response = self.session.get(url, headers={"Authorization": sent}, timeout=self.timeout)
                    if response.status_code == 401:
                        raise AuthFailed(f"registry {self.host} refused {self.who}", hint=_HINT)
                else:
                    self.header(scopes)
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach registry {self.host}: {reason(exc)}", transient=True) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise RegistryError(f"registry {self.host} answered {response.status_code} for GET /v2/",
                                transient=True, retry_after=retry_after(response))

    def _cached(self, wanted: frozenset[tuple[str, str]]) -> _Token | None:
        now = time.monotonic()
        with self._lock:
            self._tokens = [t for t in self._tokens if t.renew_at > now]
            return next((t for t in self._tokens if wanted <= t.scopes), None)

    def _basic(self) -> str:
        assert self.creds is not None
        raw = f"{self.creds.username}:{self.creds.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _fetch(self, scopes: tuple[Scope, ...]) -> _Token:
        realm = self._params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.host} asked for a token but named no realm")
        service = self._params.get("service", "")
        identity = self.creds.identity_token if self.creds else None
        try:
            if identity:
                form = {"grant_type": "refresh_token", "refresh_token": identity, "service": service,
                        "client_id": CLIENT_ID, "scope": " ".join(scope_text(s) for s in scopes)}
                answer = self.session.post(realm, data=form, timeout=self.timeout)
            else:
                query = [("service", service), *(("scope", scope_text(s)) for s in scopes)]
                auth = (self.creds.username, self.creds.password) if self.creds else None
                answer = self.session.get(realm, params=query, auth=auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RegistryError(
                f"cannot reach the token service of registry {self.host} ({realm}): {reason(exc)}", transient=True
            ) from None
        if answer.status_code in (401, 403):
            raise AuthFailed(f"registry {self.host} refused {self.who}: its token service answered {answer.status_code}",
                             hint=_HINT)
        if answer.status_code == 429 or answer.status_code >= 500:
            raise RegistryError(f"the token service of registry {self.host} answered {answer.status_code}",
                                transient=True, retry_after=retry_after(answer))
        try:
            body = answer.json()
            value = str(body.get("token") or body.get("access_token") or "")
        except (ValueError, AttributeError):
            value = ""
        if answer.status_code != 200 or not value:
            raise RegistryError(f"the token service of registry {self.host} answered {answer.status_code} without a token")
        remember_secret(value)
        token = _Token(value, _grants(scopes), time.monotonic() + _renew_in(body))
        with self._lock:
            self._tokens.append(token)
        return token


def _renew_in(body: dict[str, object]) -> float:
    """Seconds until a token must be renewed: `expires_in` counted from `issued_at` when that
    is earlier than now (a token that sat in a queue), less a margin."""
    try:
        lifetime = float(body.get("expires_in") or DEFAULT_LIFETIME)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    left = lifetime
    issued = body.get("issued_at")
    if isinstance(issued, str):
        try:
            at = datetime.datetime.fromisoformat(issued.replace("Z", "+00:00"))
            if at.tzinfo is not None:
                left = min(lifetime, at.timestamp() + lifetime - time.time())
        except ValueError:
            pass
    return max(0.0, left - min(RENEW_MARGIN, lifetime / 5))


def reason(exc: requests.RequestException) -> str:
    text = str(exc).lower()
    for known in ("connection refused", "connection reset", "name or service not known", "timed out"):
        if known in text:
            return known
    return "read timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__


_HINT = "Check the username and token (for Docker Hub, an access token with write scope), or `docker login` again."
