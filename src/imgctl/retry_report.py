"""Every retry announced: the callback call_with_retries runs before each wait, as an event.

Apart from retry.py so that the policy stays free of the event vocabulary: it only calls `on_retry`.
"""

from __future__ import annotations

from collections.abc import Callable

from imgctl.events import Event, Retrying
from imgctl.retry_classify import failure_text


def reporter(emit: Callable[[Event], None], image: str | None, action: str) -> Callable[[int, int, float, BaseException], None]:
    def report(attempt: int, attempts: int, wait: float, exc: BaseException) -> None:
        reason = failure_text(exc)
        emit(Retrying(image=image, action=action, attempt=attempt, attempts=attempts, wait=wait, reason=reason[:300]))

    return report
