"""The one retry policy: what is worth retrying, how long to wait, and how often.

Transient (retried):
    | what                                   | how it shows                                     |
    |----------------------------------------|--------------------------------------------------|
    | registry 5xx                           | stream text "500/502/503/504", "Service Unavailable", "Bad Gateway", "Gateway Timeout" |
    | registry rate limit (429)              | "429", "toomanyrequests" (waits honour Retry-After, capped) |
    | connection refused / reset / cut       | "connection refused", "connection reset", "broken pipe", "EOF"; requests ConnectionError |
    | timeouts                               | "timeout", "i/o timeout", "deadline exceeded"; requests Timeout, urllib3 ReadTimeoutError |
    | a truncated or garbled stream          | StreamGarbled; a push stream without a digest    |
Permanent (never retried):
    | auth                                   | "unauthorized", "authentication required", "denied", 401, 403 |
    | a failed build (RUN exited non-zero)   | BuildFailed                                      |
    | anything else                          | config, usage, unknown stream errors             |

Waits grow exponentially with jitter; a run has a total retry budget shared by all images, so a
registry that is down fails the release in bounded time. Each retry is announced as an event.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from imgctl.errors import AuthFailed, PushFailed, RegistryError

T = TypeVar("T")

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
    from imgctl.events import StreamGarbled

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


@dataclass
class RetryPolicy:
    attempts: int = 4  # per operation, the first try included
    initial_wait: float = 1.0
    max_wait: float = 30.0
    max_retry_after: float = 60.0
    budget: int = 20  # retries in the whole run
    _used: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> bool:
        with self._lock:
            if self._used >= self.budget:
                return False
            self._used += 1
            return True

    @property
    def used(self) -> int:
        return self._used

    def wait_for(self, attempt: int, exc: BaseException | None) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > 0:
            return min(float(retry_after), self.max_retry_after)
        base = min(self.initial_wait * 2 ** (attempt - 1), self.max_wait)
        return base / 2 + random.uniform(0, base / 2)


def call_with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    on_retry: Callable[[int, int, float, BaseException], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> T:
    """Run `operation`; retry transient failures per `policy`, calling `on_retry` before each wait."""

    def should_retry(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None or not is_transient(exc) or cancelled():
            return False
        return state.attempt_number < policy.attempts and policy.take()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        assert exc is not None
        on_retry(state.attempt_number, policy.attempts, wait, exc)

    retrying = tenacity.Retrying(
        retry=should_retry,
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=lambda state: policy.wait_for(
            state.attempt_number, state.outcome.exception() if state.outcome else None
        ),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(operation)
