"""Build slots handed out by rank, not by who asks first."""

from __future__ import annotations

import threading


class BuildSlots:
    """`size` slots for builds, given to the best-ranked images that are ready (lower rank first).

    An image is queued when it becomes ready, before its lookups and pulls, and asks for a slot
    once those are done. A free slot waits for the best-ranked queued image even if it has not
    asked yet, so the order does not depend on which thread happens to ask first. An image that
    will not build after all (reused, or failed before building) must be withdrawn.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._queued: set[int] = set()  # ranks of the images waiting for a slot
        self._changed = threading.Condition()

    def queue(self, rank: int) -> None:
        with self._changed:
            self._queued.add(rank)

    def acquire(self, rank: int) -> None:
        """Block until `rank` is among the `free` best-ranked queued images, then take a slot."""
        with self._changed:
            while rank not in sorted(self._queued)[: self._free]:
                self._changed.wait()
            self._queued.discard(rank)
            self._free -= 1

    def withdraw(self, rank: int) -> None:
        """Leave the queue without a slot; nothing happens if `rank` is not queued."""
        with self._changed:
            if rank in self._queued:
                self._queued.discard(rank)
                self._changed.notify_all()

    def release(self) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()
