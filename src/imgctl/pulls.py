"""Base images pulled before a build: `--pull`'s refresh of the bases this run does not build,
and a base that --skip-unchanged reused (it was never built here). A registry's pull limit
(Docker Hub's above all) is reported as such: how many pulls are left, and that logging in
raises it; the pull is tried again only when the registry said when (Retry-After)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from imgctl.auth import Credentials
from imgctl.dockerfile import split_reference
from imgctl.engine import Engine
from imgctl.errors import RegistryError
from imgctl.events import Event, Warning
from imgctl.refs import is_docker_hub
from imgctl.registry import PullLimit, RegistryClient
from imgctl.retry import RetryPolicy, call_with_retries
from imgctl.retry_report import reporter

_RATE_LIMITED = re.compile(r"toomanyrequests|too many requests|\b429\b|pull rate limit", re.I)


def limit_message(host: str, limit: PullLimit, creds: Credentials | None) -> str:
    """`Docker Hub's pull limit: 0 of 100 pulls left per 6 h`, and what to do about it."""
    who = "Docker Hub's pull limit" if is_docker_hub(host) else f"the pull limit of registry {host}"
    figures = ""
    if limit.limit and limit.remaining:
        total, _, window = limit.limit.partition(";w=")
        left = limit.remaining.split(";", 1)[0]
        per = f" per {int(window) / 3600:g} h" if window.isdigit() else ""
        figures = f": {left} of {total} pulls left{per}"
    if creds is None:
        advice = "log in (`docker login`, or auth in imgctl's config) to raise it"
    else:
        advice = f"{creds.username!r} has used its pulls; a paid plan raises the limit"
    return f"{who}{figures}; {advice}"


class Pulls:
    def __init__(
        self, engine: Engine, policy: RetryPolicy, emit: Callable[[Event], None], cancelled: threading.Event,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.emit = emit
        self.cancelled = cancelled
        self._done: set[str] = set()
        self._lock = threading.Lock()
        self._pulling: dict[str, threading.Event] = {}  # reference -> set once its one pull of the run ended

    def refresh(self, image: str, bases: list[str], creds_for: Callable[[str], Credentials | None]) -> None:
        """Pull the newest of each base, once per run; a base that cannot be pulled is a warning
        (the build uses the local one, or reports that there is none)."""
        for base in bases:
            with self._lock:
                if base in self._done:
                    continue
                self._done.add(base)
                self.pull(image, base, creds_for(base), what="refresh base image")

    def cache(self, image: str, references: list[str], creds_for: Callable[[str], Credentials | None]) -> None:
        """cache_from for the classic builder, which takes its cache from local images only: each
        pulled first, once per run; one not there yet (a first release) is no error."""
        for reference in references:
            with self._lock:
                if reference in self._done:
                    continue
                self._done.add(reference)
            self.engine.pull(reference, creds_for(reference))

    def pull_once(self, image: str, reference: str, creds: Credentials | None, *, what: str) -> None:
        """pull(), once per run for each reference: the images FROM one base ask at once, and
        wait for the first one's pull rather than each pulling it again."""
        with self._lock:
            done = self._pulling.get(reference)
            first = done is None
            if first:
                done = self._pulling[reference] = threading.Event()
        assert done is not None
        if not first:
            done.wait()
            return
        try:
            self.pull(image, reference, creds, what=what)
        finally:
            done.set()

    def pull(self, image: str, reference: str, creds: Credentials | None, *, what: str) -> None:
        host, path = split_reference(reference)

        def attempt() -> None:
            problem = self.engine.pull(reference, creds)
            if problem is None:
                return
            if not _RATE_LIMITED.search(problem):
                raise RegistryError(problem)
            limit = RegistryClient(host, creds).pull_limit(path, _reference_of(reference))
            # Retried only when the registry says when: a pull window lasts hours, not seconds.
            raise RegistryError(limit_message(host, limit, creds), transient=limit.retry_after is not None,
                                retry_after=limit.retry_after)

        try:
            call_with_retries(attempt, policy=self.policy, on_retry=reporter(self.emit, image, f"pull {reference}"),
                              cancelled=self.cancelled.is_set, registry=host)
        except RegistryError as exc:
            self.emit(Warning(image=image, message=f"could not {what} {reference}: {exc.message}"))


def _reference_of(reference: str) -> str:
    """The tag or digest a reference names (`latest` when it names none)."""
    name, at, digest = reference.partition("@")
    if at:
        return digest
    tail = name.rsplit("/", 1)[-1]
    return tail.rsplit(":", 1)[1] if ":" in tail else "latest"
