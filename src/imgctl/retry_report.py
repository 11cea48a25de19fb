"""Every retry announced: the callback call_with_retries runs before each wait, as an event."""

from __future__ import annotations

from collections.abc import Callable

from imgctl.errors import ImgctlError
from imgctl.events import Event, Retrying


def reporter(emit: Callable[[Event], None], image: str | None, action: str) -> Callable[[int, int, float, BaseException], None]:
    def report(attempt: int, attempts: int, wait: float, exc: BaseException) -> None:
        reason = exc.message if isinstance(exc, ImgctlError) else f"{type(exc).__name__}: {exc}"
        emit(Retrying(image=image, action=action, attempt=attempt, attempts=attempts, wait=wait, reason=reason[:300]))

    return report
