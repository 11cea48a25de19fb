"""When each image of a release runs: a dependency graph, build slots by rank, and what an
interrupt or --fail-fast stops. What an image's run does is run.py's."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from imgctl.errors import ImgctlError
from imgctl.events import Event, ImageSkipped, Warning
from imgctl.plan import Plan, PlannedImage
from imgctl.results import ImageResult
from imgctl.slots import BuildSlots

PLATFORM_SLOTS = 64  # slot keys per image: one per platform (the config allows at most 32)


class Scheduler:
    def __init__(
        self, plan: Plan, jobs: int, *, emit: Callable[[Event], None], results: dict[str, ImageResult],
        cancelled: threading.Event, grace_seconds: float, fail_fast: bool, fail: Callable[[str, str, str], bool],
        on_interrupt: Callable[[], None] = lambda: None,
    ) -> None:
        self.plan = plan
        self.emit = emit
        self.results = results
        self.cancelled = cancelled
        self.grace_seconds = grace_seconds
        self.fail_fast = fail_fast
        self._fail = fail
        self._on_interrupt = on_interrupt  # e.g. cancel the running BuildKit builds rather than wait for them
        self._slots = BuildSlots(jobs)
        # One build slot per platform of an image; an image's platforms come right after each other.
        self._keys = {
            name: [rank * PLATFORM_SLOTS + i for i in range(max(1, len(plan.image(name).platforms)))]
            for name, rank in plan.build_order().items()
        }
        self._holding: set[str] = set()  # images with a build slot, until the scheduler takes it back
        self.stop_reason: str | None = None  # images not yet building give up when it is set
        self._settled = {image.name: threading.Event() for image in plan.images}  # its worker ended, or it was skipped
        self._finished: queue.Queue[tuple[str, str]] = queue.Queue()  # (image, built | done | failed) for the scheduler
        self._release_image: Callable[[PlannedImage], bool] = lambda image: False

    # -- what an image's run asks of it ----------------------------------------------------

    def slot(self, image: PlannedImage) -> None:
        """Wait for the image's build slot; the scheduler takes it back at the image's next message."""
        self._slots.acquire(self._keys[image.name][0])
        self._holding.add(image.name)

    def platform_slot(self, image: PlannedImage, index: int) -> Callable[[], None]:
        """Wait for the slot of platform `index`; returns what frees it (the build's end)."""
        self._slots.acquire(self._keys[image.name][index])
        return self._slots.release

    def withdraw(self, image: PlannedImage) -> None:
        """The image will not build (any more): leave the queue for its slots."""
        for key in self._keys[image.name]:
            self._slots.withdraw(key)

    def built(self, image: PlannedImage) -> None:
        """Its dependents may start building now; it pushes next."""
        self._finished.put((image.name, "built"))

    def settled(self, name: str) -> threading.Event:
        """Set once the image's run ended, or it was skipped."""
        return self._settled[name]

    # -- the graph ---------------------------------------------------------------------------

    def run(self, release_image: Callable[[PlannedImage], bool]) -> None:
        self._release_image = release_image
        self._run_graph()

    def _run_graph(self) -> None:
        """Start each image once its dependencies are built; `jobs` builds run at once.

        An image holds a build slot from its build until it is tagged, so its pushes overlap other
        builds. It pushes only once its dependencies are pushed (see _wait_for_dependencies). When
        more images are ready than there are slots, the plan's build_order decides. The scheduler
        takes a slot back only after it has queued the images that the slot's build made ready, so
        they compete for it.

        On cancellation (SIGINT/SIGTERM set `cancelled`), start nothing new and give running
        images `grace_seconds` to finish before giving up on them.
        """
        waiting = [image.name for image in self.plan.images]
        state: dict[str, str] = {}
        running: set[str] = set()
        stop_reason: str | None = None
        deadline: float | None = None
        freed = 0  # slots to take back once the images their builds made ready are queued
        while True:
            for name in list(waiting) if stop_reason is None else ():
                broken = [d for d in self.plan.image(name).depends_on if state.get(d) in ("failed", "skipped")]
                if broken:
                    waiting.remove(name)
                    state[name] = "skipped"
                    self._skip(name, f"dependency {broken[0]} {state[broken[0]]}")
            if self.cancelled.is_set() and deadline is None:
                stop_reason, deadline = "release interrupted", time.monotonic() + self.grace_seconds
                self._on_interrupt()
                if running:
                    self.emit(Warning(message=(
                        f"interrupted: starting nothing new; waiting up to {self.grace_seconds:.0f}s for "
                        f"{', '.join(sorted(running))} (interrupt again to stop now)"
                    )))
            self.stop_reason = stop_reason
            if stop_reason is None:
                ready = [n for n in waiting if all(state.get(d) in ("built", "done") for d in self.plan.image(n).depends_on)]
                for name in ready:  # all queued before any starts: a started one may ask for a slot at once
                    for key in self._keys[name]:
                        self._slots.queue(key)
                for name in ready:
                    waiting.remove(name)
                    state[name] = "running"
                    running.add(name)
                    threading.Thread(
                        target=self._worker, args=(self.plan.image(name),), name=f"imgctl-{name}", daemon=True
                    ).start()
            for _ in range(freed):
                self._slots.release()
            freed = 0
            if not running:
                break
            if deadline is not None and time.monotonic() > deadline:
                for name in sorted(running):
                    self._fail(name, "interrupted", "still running when the grace period ended")
                break
            try:  # a timeout keeps the loop responsive to cancellation
                name, outcome = self._finished.get(timeout=0.2)
            except queue.Empty:
                continue
            state[name] = outcome
            if name in self._holding:  # built, or ended before that
                self._holding.discard(name)
                freed += 1
            if outcome == "built":
                continue  # still running: it pushes next
            running.discard(name)
            if outcome == "failed" and self.fail_fast:
                stop_reason = "--fail-fast: an image failed"
        for name in waiting:
            self._skip(name, stop_reason or "not started")

    def _skip(self, name: str, reason: str) -> None:
        result = self.results[name]
        result.status, result.error = "skipped", reason
        self.emit(ImageSkipped(image=name, reason=reason))
        self._settled[name].set()

    def _worker(self, image: PlannedImage) -> None:
        ok = False
        try:
            ok = self._release_image(image)
        except ImgctlError as exc:  # e.g. the engine went away between two steps
            self._fail(image.name, "engine", exc.message)
        except BaseException as exc:  # noqa: BLE001 - a worker must always report back
            self._fail(image.name, "internal", f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self.withdraw(image)  # if it ended before asking for its slots
            self._settled[image.name].set()
            outcome = "done" if ok else "skipped" if self.results[image.name].status == "skipped" else "failed"
            self._finished.put((image.name, outcome))
