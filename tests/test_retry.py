"""The retry policy on a fake clock: the wait schedule, its cap, Retry-After (seconds and HTTP
dates), the window's end, a registry given up on, the run's budget, interrupts. Nothing sleeps."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from imgctl.errors import AuthFailed, PushFailed, RegistryError
from imgctl.retry import DEFAULT_WINDOW, RetryPolicy, call_with_retries
from imgctl.retry_classify import parse_retry_after, registry_of

HOST = "127.0.0.1:5000"


@dataclass
class Clock:
    """Monotonic time that moves only when the code under test sleeps."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def policy_on(clock: Clock, *, jitter: str = "max", **kwargs: float) -> RetryPolicy:
    pick: Callable[[float, float], float] = (lambda lo, hi: hi) if jitter == "max" else (lambda lo, hi: lo)
    return RetryPolicy(clock=clock, sleep=clock.sleep, wall_clock=lambda: 1_700_000_000.0, jitter=pick, **kwargs)


@dataclass
class Retries:
    """on_retry's calls, with the clock's time of each."""

    clock: Clock
    calls: list[tuple[float, int, int, float, str]] = field(default_factory=list)

    def __call__(self, attempt: int, attempts: int, wait: float, exc: BaseException) -> None:
        self.calls.append((self.clock.now, attempt, attempts, wait, str(exc)))

    @property
    def waits(self) -> list[float]:
        return [c[3] for c in self.calls]


def failing(times: int, make: Callable[[], Exception], clock: Clock | None = None, takes: float = 0.0):  # type: ignore[no-untyped-def]
    """An operation that fails `times` times (each try taking `takes` seconds), then returns "ok"."""
    state = {"calls": 0}

    def operation() -> str:
        state["calls"] += 1
        if clock is not None:
            clock.now += takes
        if state["calls"] <= times:
            raise make()
        return "ok"

    operation.calls = state  # type: ignore[attr-defined]
    return operation


def refused(host: str = HOST) -> RegistryError:
    return RegistryError(f"cannot reach registry {host}: connection refused", transient=True)


def unavailable(retry_after: float | str | None = None) -> PushFailed:
    return PushFailed(f"push of {HOST}/ns/app:1.0.0 failed: received unexpected HTTP status: 503 Service Unavailable",
                      transient=True, retry_after=retry_after)  # type: ignore[arg-type]


# -- the schedule ---------------------------------------------------------------------------------


def test_waits_double_from_half_a_second_to_a_cap_of_15s() -> None:
    clock = Clock()
    retries = Retries(clock)
    op = failing(9, refused)
    assert call_with_retries(op, policy=policy_on(clock), on_retry=retries) == "ok"
    assert retries.waits == [0.5, 1, 2, 4, 8, 15, 15, 15, 15]
    assert [c[1] for c in retries.calls] == list(range(1, 10))
    assert clock.sleeps and max(clock.sleeps) <= 0.25  # waits are cut in slices: an interrupt is seen quickly
    assert clock.now - 1000.0 == pytest.approx(sum(retries.waits))


def test_jitter_keeps_each_wait_between_half_and_all_of_its_step() -> None:
    policy = RetryPolicy()
    for attempt in range(1, 12):
        step = policy.backoff(attempt)
        waits = [policy.wait_for(attempt, None) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > step / 10  # it does vary
    assert policy.backoff(1) == 0.5 and policy.backoff(6) == 15 and policy.backoff(500) == 15


# -- Retry-After ----------------------------------------------------------------------------------


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after(" 120 ", now=now) == 120.0
    assert parse_retry_after("0", now=now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now=now) == pytest.approx(42)
    # `now` is Tue, 14 Nov 2023 22:13:20 GMT; RFC 9110's IMF-fixdate, as a registry writes it
    assert parse_retry_after("Tue, 14 Nov 2023 22:35:00 GMT", now=now) == pytest.approx(1300.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0  # already past: no wait
    for bad in (None, "", "soon", "-5", "nan", "inf", "1e999"):
        assert parse_retry_after(bad, now=now) is None, bad


def test_retry_after_is_the_least_wait_and_is_capped() -> None:
    clock = Clock()
    retries = Retries(clock)
    asked = iter([3, 0, 500, "7", email.utils.formatdate(1_700_000_000 + 11, usegmt=True)])
    op = failing(5, lambda: unavailable(next(asked)))
    call_with_retries(op, policy=policy_on(clock, window=600), on_retry=retries)
    # 3 s as asked; 0 asked but the backoff (1 s) still applies; 500 capped at 60; the header's text, read
    assert retries.waits == [3.0, 1.0, 60.0, 7.0, 11.0]


def test_a_retry_after_past_the_window_gives_up_at_once_and_says_so() -> None:
    clock = Clock()
    retries = Retries(clock)
    op = failing(1, lambda: unavailable(45))
    with pytest.raises(RegistryError, match=r"asked to wait 45s, past the end of the 30s retry window") as info:
        call_with_retries(op, policy=policy_on(clock, window=30), on_retry=retries)
    assert retries.calls == [] and clock.now == 1000.0
    assert "503 Service Unavailable" in info.value.message
    assert isinstance(info.value.__cause__, PushFailed)


# -- the window -----------------------------------------------------------------------------------


def test_the_last_wait_ends_with_the_window_and_nothing_starts_after_it() -> None:
    clock = Clock()
    retries = Retries(clock)
    op = failing(1000, refused)
    started = clock.now
    with pytest.raises(RegistryError) as info:
        call_with_retries(op, policy=policy_on(clock, window=20), on_retry=retries)
    assert retries.waits == [0.5, 1, 2, 4, 8, 4.5]  # 15.5 s, then cut to end at 20 s
    assert clock.now - started == pytest.approx(20)
    assert op.calls["calls"] == 7  # type: ignore[attr-defined]
    assert info.value.message.startswith(f"gave up on registry {HOST}: no request to it succeeded for 20s")
    assert "connection refused" in info.value.message


def test_the_window_counts_from_the_first_failure_and_includes_slow_attempts() -> None:
    """A push that works for 10 minutes and then fails has its whole window still ahead; time
    spent in failing attempts (a timeout) counts against it."""
    clock = Clock()
    retries = Retries(clock)
    state = {"calls": 0}

    def operation() -> str:
        state["calls"] += 1
        clock.now += 600 if state["calls"] == 1 else 5  # a long upload, then 5 s timeouts
        raise RegistryError(f"registry {HOST} answered 503 for PUT ns/app/manifests/1", transient=True)

    with pytest.raises(RegistryError, match="gave up on registry"):
        call_with_retries(operation, policy=policy_on(clock, window=30), on_retry=retries)
    first_failure = 1000.0 + 600
    assert retries.calls[0][0] == first_failure
    assert clock.now - first_failure <= 30 + 5  # the last attempt may start at the window's end
    assert all(t + w <= first_failure + 30 + 1e-9 for t, _, _, w, _ in retries.calls)


def test_default_window_arithmetic_a_dead_registry_fails_within_3_minutes() -> None:
    """The default: 90 s of retrying a registry that refuses every connection, then one error."""
    assert DEFAULT_WINDOW == 90
    for jitter in ("max", "min"):  # the longest and the shortest waits jitter can give
        clock = Clock()
        retries = Retries(clock)
        op = failing(10_000, refused, clock, takes=0.01)
        with pytest.raises(RegistryError, match=f"gave up on registry {HOST}: no request to it succeeded for 90s"):
            call_with_retries(op, policy=policy_on(clock, jitter=jitter), on_retry=retries)
        spent = clock.now - 1000.0
        assert 90 <= spent < 90.5 < 180, spent
        if jitter == "max":  # 0.5 + 1 + 2 + 4 + 8 + 15 x 4 = 75.5 s, then one more cut to end at 90 s
            assert [round(w, 2) for w in retries.waits][:9] == [0.5, 1, 2, 4, 8, 15, 15, 15, 15]
            assert len(retries.calls) == 10
        else:
            assert len(retries.calls) == 16
        # "retry n/m": m is never below what really happens
        assert all(attempt < attempts for _, attempt, attempts, _, _ in retries.calls)
        assert all(attempts >= len(retries.calls) + 1 for _, _, attempts, _, _ in retries.calls)


def test_a_zero_window_means_no_retries() -> None:
    clock = Clock()
    retries = Retries(clock)
    op = failing(1, unavailable)
    with pytest.raises(PushFailed, match="503 Service Unavailable"):  # as it came
        call_with_retries(op, policy=policy_on(clock, window=0), on_retry=retries)
    assert retries.calls == [] and op.calls["calls"] == 1  # type: ignore[attr-defined]


def test_five_503s_then_success_within_the_window() -> None:
    clock = Clock()
    retries = Retries(clock)
    op = failing(5, unavailable)
    policy = policy_on(clock)
    assert call_with_retries(op, policy=policy, on_retry=retries) == "ok"
    assert retries.waits == [0.5, 1, 2, 4, 8]
    assert policy.used == 5 and policy.waited == pytest.approx(15.5)


# -- a dead registry, given up on once ------------------------------------------------------------


def test_a_registry_dead_for_a_whole_window_fails_every_later_operation_at_once_with_one_message() -> None:
    clock = Clock()
    policy = policy_on(clock, window=10)
    first = Retries(clock)
    with pytest.raises(RegistryError) as gave_up:
        call_with_retries(failing(1000, refused), policy=policy, on_retry=first)
    assert first.calls
    after_window = clock.now
    messages = {gave_up.value.message}
    for _ in range(5):  # named by the caller: not even tried
        never = failing(1000, refused)
        with pytest.raises(RegistryError) as again:
            call_with_retries(never, policy=policy, on_retry=Retries(clock), registry=HOST)
        assert never.calls["calls"] == 0  # type: ignore[attr-defined]
        messages.add(again.value.message)
    for _ in range(5):  # found from the failure's message: tried once, not retried
        once = failing(1000, lambda: unavailable())
        later = Retries(clock)
        with pytest.raises(RegistryError) as again:
            call_with_retries(once, policy=policy, on_retry=later)
        assert once.calls["calls"] == 1 and later.calls == []  # type: ignore[attr-defined]
        messages.add(again.value.message)
    assert clock.now == after_window
    assert len(messages) == 1 and HOST in messages.pop()
    assert policy.dead(HOST) is not None and policy.dead("127.0.0.1:6000") is None


def test_other_registries_are_not_given_up_on() -> None:
    clock = Clock()
    policy = policy_on(clock, window=10)
    with pytest.raises(RegistryError):
        call_with_retries(failing(1000, refused), policy=policy, on_retry=Retries(clock))
    other = failing(2, lambda: refused("127.0.0.1:6000"))
    assert call_with_retries(other, policy=policy, on_retry=Retries(clock), registry="127.0.0.1:6000") == "ok"


def test_a_success_in_between_keeps_the_registry_alive() -> None:
    """Operations against one registry that fail and then succeed, back to back for longer than a
    window: the registry is never given up on, since requests to it did succeed."""
    clock = Clock()
    policy = policy_on(clock, window=10, budget=10_000)
    for _ in range(20):
        assert call_with_retries(failing(3, refused), policy=policy, on_retry=Retries(clock), registry=HOST) == "ok"
    assert clock.now - 1000.0 > 50
    assert policy.dead(HOST) is None


def test_one_operation_failing_while_others_succeed_gives_up_on_itself_only() -> None:
    clock = Clock()
    policy = policy_on(clock, window=10)
    state = {"calls": 0}

    def stubborn() -> str:
        state["calls"] += 1
        call_with_retries(lambda: "fine", policy=policy, on_retry=Retries(clock), registry=HOST)  # another image's request
        raise RegistryError(f"registry {HOST} answered 500 for PUT ns/app/manifests/1", transient=True)

    with pytest.raises(RegistryError) as info:
        call_with_retries(stubborn, policy=policy, on_retry=Retries(clock), registry=HOST)
    assert info.value.message.startswith(f"registry {HOST} answered 500")
    assert "over 10s, the retry window" in info.value.message
    assert policy.dead(HOST) is None


# -- the run's budget -----------------------------------------------------------------------------


def test_the_budget_bounds_all_waiting_in_a_run() -> None:
    clock = Clock()
    policy = policy_on(clock, window=10, budget=10)
    call_with_retries(failing(3, refused), policy=policy, on_retry=Retries(clock))  # 0.5 + 1 + 2
    call_with_retries(failing(3, refused), policy=policy, on_retry=Retries(clock))  # 7 s in all
    retries = Retries(clock)
    with pytest.raises(RegistryError, match=r"connection refused \(no retry left: this run has waited \d+s for retries, its budget is 10s\)"):
        call_with_retries(failing(3, refused), policy=policy, on_retry=retries)  # 0.5 + 1, and 2 more would make 10.5
    assert retries.waits == [0.5, 1]
    assert policy.waited == pytest.approx(8.5) and policy.used == 8


def test_waits_that_overlap_count_once_against_the_budget() -> None:
    clock = Clock()
    policy = policy_on(clock, window=60)
    inner: list[float] = []

    def while_a_waits(attempt: int, attempts: int, wait: float, exc: BaseException) -> None:
        # another image's operation fails and waits at the same time
        call_with_retries(failing(1, refused), policy=policy, on_retry=lambda *a: inner.append(a[2]))

    call_with_retries(failing(1, lambda: unavailable(4)), policy=policy, on_retry=while_a_waits)
    assert inner == [0.5]
    assert policy.waited == pytest.approx(4.0)  # not 4.5: the run waited 4 s
    assert policy.used == 2


def test_the_default_budget_is_five_minutes_or_two_windows() -> None:
    assert RetryPolicy().budget == 300
    assert RetryPolicy(window=10).budget == 300
    assert RetryPolicy(window=600).budget == 1200
    assert RetryPolicy(budget=50).budget == 50


# -- what is not retried, and interrupts ----------------------------------------------------------


def test_permanent_failures_are_raised_as_they_are() -> None:
    clock = Clock()
    retries = Retries(clock)
    refusal = AuthFailed(f"registry {HOST} refused user 'ci' writing ns/app/manifests/1")
    with pytest.raises(AuthFailed) as info:
        call_with_retries(failing(1, lambda: refusal), policy=policy_on(clock), on_retry=retries)
    assert info.value is refusal and retries.calls == []
    with pytest.raises(PushFailed):
        call_with_retries(failing(1, lambda: PushFailed("push of x failed: manifest invalid")),
                          policy=policy_on(clock), on_retry=retries)
    assert retries.calls == [] and clock.now == 1000.0


def test_an_interrupt_stops_the_wait_at_once_and_raises_the_last_failure() -> None:
    clock = Clock()
    retries = Retries(clock)
    stop = {"at": 1000.0 + 3}  # interrupted 3 s into the retries
    policy = policy_on(clock)
    failure = unavailable(30)

    with pytest.raises(PushFailed) as info:
        call_with_retries(failing(100, lambda: failure), policy=policy, on_retry=retries,
                          cancelled=lambda: clock.now >= stop["at"])
    assert info.value is failure
    assert len(retries.calls) == 1 and retries.waits == [30]
    assert clock.now - 1000.0 == pytest.approx(3)  # not the 30 s asked: stopped within a slice


def test_an_interrupt_before_the_first_retry_is_not_announced() -> None:
    clock = Clock()
    retries = Retries(clock)
    with pytest.raises(RegistryError, match="connection refused"):
        call_with_retries(failing(1, refused), policy=policy_on(clock), on_retry=retries, cancelled=lambda: True)
    assert retries.calls == [] and clock.sleeps == []



def test_an_interrupt_in_a_later_wait_raises_the_failure_just_before_it() -> None:
    clock = Clock()
    failures = [unavailable() for _ in range(10)]
    seen = iter(failures)

    def operation() -> str:
        raise next(seen)

    with pytest.raises(PushFailed) as info:
        call_with_retries(operation, policy=policy_on(clock), on_retry=Retries(clock),
                          cancelled=lambda: clock.now >= 1000.0 + 2)  # in the third wait: 0.5 + 1, then 2 s
    assert info.value is failures[2]


def test_ctrl_c_in_an_operation_passes_at_once() -> None:
    """A KeyboardInterrupt (any BaseException that is not an Exception) is never classified,
    retried or announced, and cancelled() is not even asked."""
    clock = Clock()
    retries = Retries(clock)
    asked: list[bool] = []
    with pytest.raises(KeyboardInterrupt):
        call_with_retries(failing(1, KeyboardInterrupt), policy=policy_on(clock), on_retry=retries,
                          cancelled=lambda: asked.append(True) or False)
    assert retries.calls == [] and asked == [] and clock.now == 1000.0


def test_giving_up_names_the_last_failure_as_its_cause() -> None:
    clock = Clock()
    failures = [refused() for _ in range(100)]
    seen = iter(failures)

    def operation() -> str:
        raise next(seen)

    with pytest.raises(RegistryError, match="gave up on registry") as info:
        call_with_retries(operation, policy=policy_on(clock, window=5), on_retry=Retries(clock))
    assert info.value.__cause__ is failures[4]  # tried at 0, 0.5, 1.5, 3.5 and 5 s

# -- which registry a failure names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "registry"),
    [
        (f"push of {HOST}/ns/app:1.0.0 failed: received unexpected HTTP status: 503", HOST),
        (f"push of {HOST}/ns/app:1.0.0 ended without a digest: the registry did not confirm it", HOST),
        ("push of acme/app:1.0.0 failed: EOF", "docker.io"),
        ("push of localhost/app:1 failed: EOF", "localhost"),
        ("push of registry-1.docker.io/acme/app:1 failed: EOF", "docker.io"),
        ("login to 127.0.0.1:9 failed: connection refused", "127.0.0.1:9"),
        (f"cannot reach registry {HOST}: connection refused", HOST),
        (f"registry {HOST} answered 503 for HEAD ns/app/manifests/1", HOST),
        ("the token service of registry ghcr.io answered 429", "ghcr.io"),
        ("cannot reach the token service of registry [::1]:5000 (http://[::1]:5001/token): connection refused", "[::1]:5000"),
        ("something else broke", None),
    ],
)
def test_registry_of_a_failure(message: str, registry: str | None) -> None:
    assert registry_of(RegistryError(message)) == registry
