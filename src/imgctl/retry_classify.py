"""What a failure says about retrying it: transient or permanent, the registry it names, the wait it asks for.

Transient (retried):
    | what                                   | how it shows                                     |
    |----------------------------------------|--------------------------------------------------|
    | registry 5xx                           | stream text "500/502/503/504", "Service Unavailable", "Bad Gateway", "Gateway Timeout" |
    | registry rate limit (429)              | "429", "toomanyrequests" (waits honour Retry-After, capped) |
    | connection refused / reset / cut       | "connection refused", "connection reset", "broken pipe", "EOF"; requests ConnectionError |
    | timeouts                               | "timeout", "i/o timeout", "deadline exceeded"; requests Timeout, urllib3 ReadTimeoutError |
    | a token service that is down or busy   | RegistryError(transient=True) from the registry client |
    | a truncated or garbled stream          | StreamGarbled; a push stream without a digest    |
Permanent (never retried):
    | auth                                   | "unauthorized", "authentication required", "denied", 401, 403 |
    | a failed build (RUN exited non-zero)   | BuildFailed                                      |
    | anything else                          | config, usage, unknown stream errors             |

How long a transient failure is retried is the policy's (retry.py).
"""

from __future__ import annotations

import re
import time

from imgctl.errors import AuthFailed, ImgctlError, PushFailed, RegistryError
from imgctl.refs import DOCKER_HUB, is_docker_hub

_PERMANENT = re.compile(r"unauthori[sz]ed|authentication required|denied|\b40[13]\b|forbidden|no basic auth credentials", re.I)
_RATE = re.compile(r"\b429\b|toomanyrequests|too many requests", re.I)
_TRANSIENT = re.compile(
    r"\b50[0-4]\b|service unavailable|bad gateway|gateway time-?out|internal server error"
    r"|connection refused|connection reset|broken pipe|\bEOF\b|timeout|timed out|i/o timeout|deadline exceeded"
    r"|no such host|network is unreachable|TLS handshake",
    re.I,
)
# Engine errors quote URLs and addresses (`Put "http://h:5000/v2/x/manifests/401": read tcp
# 127.0.0.1:41234->h:5000: ...`), whose digits and words are not statuses: drop them first.
_ADDRESSES = re.compile(r"\bhttps?://[^\s\"']*|\[?[\w.:-]+\]?:\d+\b")


def is_auth_text(message: str) -> bool:
    return bool(_PERMANENT.search(_ADDRESSES.sub(" ", message)))


def classify_text(message: str) -> tuple[bool, float | None]:
    """(transient, retry-after seconds) for an error message from the engine's stream."""
    message = _ADDRESSES.sub(" ", message)
    if _PERMANENT.search(message):
        return False, None
    if _RATE.search(message):
        return True, None
    return bool(_TRANSIENT.search(message)), None


def is_transient(exc: BaseException) -> bool:
    from imgctl.streams import StreamGarbled

    if isinstance(exc, AuthFailed):
        return False
    if isinstance(exc, (PushFailed, RegistryError)):
        return exc.transient
    if isinstance(exc, StreamGarbled):
        return True
    import requests  # docker-py's transport; imported late to keep start-up light

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    try:
        import urllib3.exceptions as u3
    except ImportError:  # pragma: no cover - urllib3 ships with requests
        return False
    return isinstance(exc, (u3.ReadTimeoutError, u3.ProtocolError))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for: delay-seconds, or an HTTP-date (RFC 9110 10.2.3)
    measured against `now` (Unix time; default the clock). None if absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        import email.utils  # late: only a 429/503 that gives a date needs it

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # pragma: no cover - Python < 3.10 returned None
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            import datetime

            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None


_NAMED_REGISTRY = re.compile(r"\bregistry (\[[^\]\s]+\](?::\d+)?|[^\s:,()]+(?::\d+)?)")
_OPERATION = re.compile(r"^(push of|login to) (\S+)\s")


def registry_of(exc: BaseException) -> str | None:
    """The registry a failure names, as imgctl's messages do (`push of REF failed`, `login to
    HOST failed`, `... registry HOST ...`): a stand-in for callers that do not say it."""
    text = exc.message if isinstance(exc, ImgctlError) else str(exc)
    match = _OPERATION.match(text)
    if match and match.group(1) == "login to":
        return _host(match.group(2))
    if match:  # a reference: its first part is a host if it looks like one (docker's rule)
        first, slash, _ = match.group(2).partition("/")
        return _host(first) if slash and ("." in first or ":" in first or first == "localhost") else DOCKER_HUB
    match = _NAMED_REGISTRY.search(text)
    return _host(match.group(1)) if match else None


def _host(name: str) -> str:
    return DOCKER_HUB if is_docker_hub(name) else name


def failure_text(exc: BaseException) -> str:
    """A failure as a retry's reason names it: imgctl's own message, else the exception's type and text."""
    return exc.message if isinstance(exc, ImgctlError) else f"{type(exc).__name__}: {exc}"
