"""Building one planned image: its bases pulled, --skip-unchanged's reuse of an unchanged one, the
build (or the local image built from the same inputs), its size checked and its tags set.

What becomes of the built image (pushed, or kept local) is run.py's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from imgctl.buildsecrets import resolve
from imgctl.dockerfile import split_reference
from imgctl.engine import Engine
from imgctl.errors import BuildFailed, EngineUnavailable, ImgctlError, UsageError
from imgctl.events import Event, ImageSkipped, ImageStarted, Tagged
from imgctl.multiplatform import MultiPlatform, PlatformFailed
from imgctl.plan import Plan, PlannedImage
from imgctl.pulls import Pulls
from imgctl.registries import Registries
from imgctl.results import ImageResult
from imgctl.reuse import INPUTS_LABEL, Reuse
from imgctl.schedule import Scheduler
from imgctl.snapshot import Snapshot
from imgctl.units import human_bytes


class Fail(Protocol):
    """Release._fail: records the image's failure and emits it."""

    def __call__(self, name: str, stage: str, message: str, output: tuple[str, ...] = ()) -> bool: ...


@dataclass(frozen=True)
class Built:
    """An image ready to push: its build began at `started`, or it was `reused` (nothing built)."""

    started: float
    reused: bool = False


class Builds:
    def __init__(
        self, plan: Plan, engine: Engine, emit: Callable[[Event], None], *, registries: Registries, pulls: Pulls, reuse: Reuse,
        platforms: MultiPlatform, schedule: Scheduler, results: dict[str, ImageResult],
        registry_work: threading.BoundedSemaphore, fail: Fail,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.emit = emit
        self.registries = registries
        self.pulls = pulls
        self.reuse = reuse
        self.platforms = platforms
        self.schedule = schedule
        self.results = results
        self._registry_work = registry_work  # shared with the release's pushes (see Release.__init__)
        self._fail = fail
        self.secrets: dict[str, dict[str, Any]] = {}  # image -> engine.build's secrets and ssh (read_secrets)

    def read_secrets(self, environ: dict[str, str] | None) -> None:
        """Each image's build secrets and SSH agents, read now (engine.build's keyword arguments)."""
        found: dict[str, dict[str, Any]] = {}
        for image in self.plan.images:
            if not (image.secrets or image.ssh):
                continue
            if self.plan.options.builder != "buildkit":
                raise UsageError(
                    f"{image.name}: build secrets and SSH agents are served to BuildKit only, and this release builds "
                    f"with the {self.plan.options.builder} builder", hint="Use --builder buildkit (or builder: auto).",
                )
            given = resolve(image.name, image.secrets, image.ssh, environ)
            found[image.name] = {"secrets": given.secrets, "ssh": given.ssh}
        self.secrets = self.platforms.secrets = found

    def build(self, image: PlannedImage) -> Built | None:
        """Build and tag the image, or find it unchanged; None if it failed or was skipped (as its result says)."""
        result = self.results[image.name]
        options = self.plan.options
        if options.pull:
            self._refresh_bases(image)
        if image.cache_from and options.builder == "classic":  # the classic builder uses local images only
            self.pulls.cache(image.name, list(image.cache_from), self.registries.creds_for)
        # Every pushed image carries its inputs digest, so any later run can use --skip-unchanged.
        # The walk that makes it keeps the context's tar for the build (snapshot.py).
        if image.platforms:
            with self._registry_work:
                keep = "memory" if options.skip_unchanged else "all"  # as below: most such images are reused
                inputs = self.reuse.inputs(image, image.platforms, keep=keep) if options.push else None
            return self._build_platforms(image, inputs)
        inputs = None
        try:
            if options.push and options.skip_unchanged:
                with self._registry_work:  # a tar kept while the image waits for its slot is a small one
                    inputs = self.reuse.inputs(image, keep="memory")
                    same = bool(inputs and self.reuse.find_same(image, inputs.digests[0]))
                if same:
                    self.schedule.withdraw(image)  # nothing to build; dependents start once its tags are in the registry
                    return Built(time.monotonic(), reused=True)
            self.reuse.fetch_reused_bases(image)  # only now: an image reused itself needs no base locally
            self.schedule.slot(image)
            started = self._start(image)
            if started is None:
                return None
            if options.push and not options.skip_unchanged:  # walked with the slot held: builds bound the tars kept
                inputs = self.reuse.inputs(image, keep="all")
            digest = inputs.digests[0] if inputs else None
            local = self.reuse.local_build(image, digest) if digest and not (options.no_cache or options.pull) else None
            result.image_id = local or self.engine.build(  # bases were refreshed above: the builder must not
                image, no_cache=options.no_cache, pull=False, emit=self.emit,  # pull this run's own images
                extra_labels={INPUTS_LABEL: digest} if digest else None, builder=options.builder,
                credentials=self.registries.creds_for_host, snapshot=inputs, **self.secrets.get(image.name, {}),
            )
        except BuildFailed as exc:
            self._fail(image.name, "build", f"{exc.message} ({exc.hint})" if exc.hint else exc.message, exc.output)
            return None
        except ImgctlError as exc:  # an engine gone away is no fault of the build
            self._fail(image.name, "engine" if isinstance(exc, EngineUnavailable) else "build", exc.message)
            return None
        finally:
            if inputs:
                inputs.close()
        details = self.engine.inspect(result.image_id)
        result.size = details.get("Size") if isinstance(details.get("Size"), int) else None
        result.layers = len((details.get("RootFS") or {}).get("Layers") or []) or None
        if image.max_size and result.size and result.size > image.max_size:
            self._fail(
                image.name, "size", f"image is {human_bytes(result.size)}, over its max_size of {human_bytes(image.max_size)}"
            )
            return None
        try:
            for tag in image.tags:
                self.engine.tag(result.image_id, tag)
                self.emit(Tagged(image=image.name, reference=tag.reference))
        except ImgctlError as exc:
            self._fail(image.name, "engine" if isinstance(exc, EngineUnavailable) else "tag", exc.message)
            return None
        return Built(started)

    def _build_platforms(self, image: PlannedImage, inputs: Snapshot | None) -> Built | None:
        """A multi-platform image: reused if every platform is unchanged (--skip-unchanged), else
        its platforms built at once, each in a slot of its own (multiplatform.py). Each
        platform's config carries its own inputs digest."""
        try:
            digests = dict(zip(image.platforms, inputs.digests)) if inputs else {}
            if digests and self.plan.options.skip_unchanged and self.reuse.find_same_index(image, digests):
                self.schedule.withdraw(image)
                return Built(time.monotonic(), reused=True)
            self.reuse.fetch_reused_bases(image)
            result = self.results[image.name]
            started = self._start(image)
            if started is None:
                return None
            labels = {platform: {INPUTS_LABEL: digest} for platform, digest in digests.items()}
            self.platforms.build(image, lambda index: self.schedule.platform_slot(image, index), labels=labels,
                                 snapshot=inputs)
        except PlatformFailed as exc:
            self._fail(image.name, exc.stage, exc.message, exc.output)
            return None
        finally:
            if inputs:
                inputs.close()
        big = [p for p in result.platforms if image.max_size and p.size and p.size > image.max_size]
        if big:
            self._fail(image.name, "size", f"{big[0].platform} image is {human_bytes(big[0].size or 0)}, "
                       f"over its max_size of {human_bytes(image.max_size or 0)}")
            return None
        return Built(started)

    def _start(self, image: PlannedImage) -> float | None:
        """When the image's build starts; None if the run is stopping (then it is skipped)."""
        reason = self.schedule.stop_reason
        if reason:
            result = self.results[image.name]
            result.status, result.error = "skipped", reason
            self.emit(ImageSkipped(image=image.name, reason=reason))
            return None
        self.emit(ImageStarted(image=image.name))
        return time.monotonic()

    def _refresh_bases(self, image: PlannedImage) -> None:
        """--pull: fetch the newest of each base image that this run does not build itself."""
        ours = {split_reference(t.reference) for i in self.plan.images for t in i.tags + i.held_back}
        bases = [base for base in image.bases if split_reference(base) not in ours]
        self.pulls.refresh(image.name, bases, self.registries.creds_for)
