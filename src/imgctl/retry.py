"""The one retry policy: how long transient failures are retried, and how long to wait.

Which failures are transient is retry_classify.py's table; each retry is announced as an event by
retry_report.py (the policy itself only calls `on_retry`, so it knows nothing of events).

How long (RetryPolicy):
- Each operation (a login, a digest check, a tag PUT, a whole push of a tag) retries its
  transient failures for a *window* of time (90 s by default; `retry.window` in the config,
  `--retry-window`), counted from its first failure: capped exponential backoff with jitter
  (0.5 s, 1 s, 2 s, 4 s, 8 s, then 15 s; each wait between half and all of that), a Retry-After
  honoured as the least wait (capped at 60 s). The last wait is cut to end with the window; no
  attempt starts after it.
- A registry that has not answered one request successfully for a whole window is given up on
  for the rest of the run: every operation against it then fails at once with one message that
  names it. Several images against a dead registry therefore wait one window, not one each.
- A run waits for retries at most `budget` seconds in all (the wall-clock time during which any
  operation is waiting; at least 300 s and two windows), so a registry that fails often but never
  for a whole window cannot hold a release for hours either.
- Every retry is announced (`on_retry`) before its wait; an interrupt (`cancelled()`) stops the
  wait and the retrying at once, re-raising the last failure.

tenacity runs the loop (call_with_retries): its `retry` asks the policy, `stop` and
`retry_error_callback` give up, `before_sleep` announces, and its `sleep` is the policy's own,
in slices.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, TypeVar

from imgctl.errors import RegistryError
from imgctl.retry_classify import classify_text, failure_text, is_auth_text, is_transient, parse_retry_after, registry_of

if TYPE_CHECKING:  # config.py imports this module: `imgctl validate` must not pay tenacity's import
    import tenacity

T = TypeVar("T")

# classify_text, is_auth_text (imgctl.engine) and parse_retry_after (registry_auth.py) are still
# imported from here, where they were before the classification had a module of its own.
__all__ = [
    "DEFAULT_BUDGET", "DEFAULT_WINDOW", "RetryPolicy", "call_with_retries", "classify_text", "is_auth_text",
    "parse_retry_after",
]

DEFAULT_WINDOW = 90.0  # seconds; see the README's policy table for how it compares
DEFAULT_BUDGET = 300.0  # seconds of waiting per run, at the least
_SLICE = 0.25  # a wait checks cancelled() this often


class _GiveUp(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class RetryPolicy:
    """How long transient failures are retried; one instance per run, shared by every thread."""

    window: float = DEFAULT_WINDOW  # seconds an operation retries for, from its first failure
    initial_wait: float = 0.5
    max_wait: float = 15.0  # the cap of the exponential backoff
    max_retry_after: float = 60.0  # the longest Retry-After obeyed
    budget: float | None = None  # seconds the run may spend waiting; None: max(300, 2 windows)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)  # for Retry-After dates
    jitter: Callable[[float, float], float] = field(default=random.uniform, repr=False)
    _used: int = field(default=0, repr=False)
    _charged: float = field(default=0.0, repr=False)  # seconds of the budget spent
    _charged_until: float = field(default=float("-inf"), repr=False)
    _failing_since: dict[str, float] = field(default_factory=dict, repr=False)  # registry -> first failure
    _dead: dict[str, str] = field(default_factory=dict, repr=False)  # registry -> the one message
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.window >= 0 or self.initial_wait <= 0 or self.max_wait < self.initial_wait:
            raise ValueError(f"bad retry policy: {self!r}")
        if self.budget is None:
            self.budget = max(DEFAULT_BUDGET, 2 * self.window)

    @property
    def used(self) -> int:
        """Retries made in this run."""
        return self._used

    @property
    def waited(self) -> float:
        """Seconds of this run's budget spent waiting (overlapping waits count once)."""
        return self._charged

    def backoff(self, attempt: int) -> float:
        """The longest wait after failed attempt `attempt` (1-based): capped exponential."""
        return min(self.initial_wait * 2 ** min(attempt - 1, 64), self.max_wait)

    def retry_after(self, exc: BaseException) -> float | None:
        """The Retry-After a failure carries (seconds, or the header's text), capped."""
        value = getattr(exc, "retry_after", None)
        if isinstance(value, str):
            value = parse_retry_after(value, now=self.wall_clock())
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return min(float(value), self.max_retry_after)
        return None

    def wait_for(self, attempt: int, exc: BaseException | None) -> float:
        """The wait after failed attempt `attempt`: jittered backoff (half to all of it), and never
        less than the Retry-After the failure carries."""
        base = self.backoff(attempt)
        wait = self.jitter(base / 2, base)
        asked = self.retry_after(exc) if exc is not None else None
        return max(wait, asked) if asked is not None else wait

    def dead(self, registry: str) -> str | None:
        """The message of a registry given up on in this run, if it was."""
        with self._lock:
            return self._dead.get(registry)

    # -- what call_with_retries asks -----------------------------------------------------------

    def _succeeded(self, registry: str | None) -> None:
        with self._lock:
            if registry is None:  # which registry answered is unknown: forget every failing streak
                self._failing_since.clear()
            else:
                self._failing_since.pop(registry, None)

    def _decide(self, registry: str | None, attempt: int, exc: BaseException, first_failure: float) -> tuple[float, int]:
        """(wait, most attempts still possible) for a retry of failed attempt `attempt`, or _GiveUp."""
        now = self.clock()
        reason = failure_text(exc)
        with self._lock:
            if registry is not None and registry in self._dead:
                raise _GiveUp(self._dead[registry])
            since = self._failing_since.setdefault(registry, now) if registry is not None else first_failure
            failing = now - since
            if registry is not None and self.window > 0 and failing >= self.window:
                self._dead[registry] = (
                    f"gave up on registry {registry}: no request to it succeeded for {self.window:g}s "
                    f"(the retry window); last error: {reason}"
                )
                raise _GiveUp(self._dead[registry])
            elapsed = now - first_failure
            left = self.window - max(elapsed, failing)
            if left <= 0:
                raise _GiveUp(f"{reason} (retried {attempt - 1} times over {elapsed:.0f}s, the retry window)")
            asked = self.retry_after(exc)
            if asked is not None and asked > left:
                raise _GiveUp(f"{reason} (the registry asked to wait {asked:.0f}s, past the end of the "
                              f"{self.window:g}s retry window)")
            wait = min(self.wait_for(attempt, exc), left)
            assert self.budget is not None
            charge = max(0.0, now + wait - max(now, self._charged_until))
            if self._charged + charge > self.budget:
                raise _GiveUp(f"{reason} (no retry left: this run has waited {self._charged:.0f}s for retries, "
                              f"its budget is {self.budget:.0f}s)")
            self._charged += charge
            self._charged_until = max(self._charged_until, now + wait)
            self._used += 1
            room = min(left - wait, self.budget - self._charged)
        return wait, self._most_attempts(attempt, room)

    def _most_attempts(self, attempt: int, room: float) -> int:
        """Attempts this operation can still reach: the next one, and as many more as the shortest
        possible waits fit in `room` seconds (an upper bound, for "retry 3/12")."""
        attempts, k = attempt + 1, attempt + 1
        while room > 1e-6 and attempts < attempt + 1000:
            room -= min(self.backoff(k) / 2, room)
            attempts, k = attempts + 1, k + 1
        return attempts


def call_with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    on_retry: Callable[[int, int, float, BaseException], None],
    cancelled: Callable[[], bool] = lambda: False,
    registry: str | None = None,
) -> T:
    """Run `operation`; retry its transient failures per `policy`, calling `on_retry(attempt,
    attempts, wait, error)` before each wait (`attempts`: the most this operation can still
    reach). `registry` names the registry it talks to (else it is read from the failure's
    message): what the policy gives up on when the registry stays dead for a whole window.

    Raises the last failure when it is permanent or on interrupt; when the window, the run's
    budget or the registry gives out, a RegistryError saying so (the last failure is its cause).
    """
    if registry is not None:
        message = policy.dead(registry)
        if message is not None:
            raise RegistryError(message)
    import tenacity

    run = _Run(policy, on_retry, cancelled, registry)
    result = tenacity.Retrying(
        retry=run.retry,
        stop=run.stop,
        wait=run.wait,
        before_sleep=run.before_sleep,
        sleep=run.sleep,
        retry_error_callback=run.give_up,
    )(operation)
    policy._succeeded(run.known)
    return result


class _Run:
    """One call_with_retries as tenacity's callbacks. tenacity asks `retry` first after each
    failure, so the policy decides there, once, and `stop`, `wait` and `before_sleep` only read
    that decision (whichever order a tenacity version asks them in)."""

    def __init__(self, policy: RetryPolicy, on_retry: Callable[[int, int, float, BaseException], None],
                 cancelled: Callable[[], bool], registry: str | None) -> None:
        self.policy, self.on_retry, self.cancelled = policy, on_retry, cancelled
        self.known = registry  # the registry failures are counted against, once one names it
        self.first_failure: float | None = None
        self.failure: BaseException | None = None  # the last one
        self.decision: tuple[float, int] = (0.0, 0)  # (wait, most attempts still possible)
        self.gave_up: str | None = None

    def retry(self, state: tenacity.RetryCallState) -> bool:
        """Retry a transient failure the policy allows another try of; a permanent one, one
        seen after an interrupt or with a zero window is raised by tenacity as it came."""
        assert state.outcome is not None
        exc = state.outcome.exception()  # None after a success; Ctrl-C (not an Exception) passes too
        if not isinstance(exc, Exception) or not is_transient(exc) or self.cancelled() or self.policy.window == 0:
            return False
        self.failure = exc
        if self.first_failure is None:
            self.first_failure = self.policy.clock()
        self.known = self.known or registry_of(exc)
        try:
            self.decision = self.policy._decide(self.known, state.attempt_number, exc, self.first_failure)
        except _GiveUp as gave_up:
            self.gave_up = gave_up.message
        return True

    def stop(self, state: tenacity.RetryCallState) -> bool:
        return self.gave_up is not None

    def give_up(self, state: tenacity.RetryCallState) -> NoReturn:
        assert self.gave_up is not None and self.failure is not None
        raise RegistryError(self.gave_up) from self.failure

    def wait(self, state: tenacity.RetryCallState) -> float:
        return self.decision[0]

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        assert self.failure is not None
        wait, attempts = self.decision
        self.on_retry(state.attempt_number, attempts, wait, self.failure)

    def sleep(self, seconds: float) -> None:
        """tenacity's sleep: the policy's, in slices; an interrupt ends it and the retrying, with
        the last failure."""
        if not _pause(seconds, self.policy, self.cancelled):
            assert self.failure is not None
            raise self.failure


def _pause(seconds: float, policy: RetryPolicy, cancelled: Callable[[], bool]) -> bool:
    """Wait `seconds` in short slices; False as soon as `cancelled()`."""
    end = policy.clock() + seconds
    while not cancelled():
        left = end - policy.clock()
        if left <= 0:
            return True
        policy.sleep(min(left, _SLICE))
    return False
