"""Runs a plan against the engine: a dependency graph of builds (builds.py builds each image), each
image then published.

An image builds once its bases are built and pushes once they are pushed (publish.py puts its
tags in the registry and confirms each; floating tags go last, only when every image succeeded).
Output only watches: everything that happens is an event handed to `emit`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from imgctl.builds import Builds
from imgctl.engine import Engine
from imgctl.events import Event, ImageDone, ImageFailed, ImageSkipped
from imgctl.plan import Plan, PlannedImage
from imgctl.multiplatform import MultiPlatform
from imgctl.publish import Publisher
from imgctl.pulls import Pulls
from imgctl.registries import Registries
from imgctl.results import ImageResult, PlatformResult, ReleaseResult, TagResult
from imgctl.retry import RetryPolicy
from imgctl.reuse import Reuse
from imgctl.schedule import Scheduler
from imgctl.transport import POOL_SIZE

__all__ = ["Release", "ReleaseResult", "ImageResult", "TagResult", "default_jobs"]

Emit = Callable[[Event], None]



def default_jobs() -> int:
    # Twice the cores: a build step that waits (a commit, a container start, the context upload)
    # leaves its core to another build, and fewer cores sit idle when a level of the graph ends.
    return max(4, 2 * (os.cpu_count() or 1))


class Release:
    def __init__(
        self,
        plan: Plan,
        engine: Engine,
        emit: Emit,
        *,
        jobs: int | None = None,
        fail_fast: bool = False,
        policy: RetryPolicy | None = None,
        grace_seconds: float = 60.0,
        environ: dict[str, str] | None = None,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.jobs = max(1, jobs or default_jobs())
        self.fail_fast = fail_fast
        self.policy = policy or RetryPolicy()
        self.grace_seconds = grace_seconds
        self.environ = environ
        self.cancelled = cancelled or threading.Event()
        # Images checking the registry (--skip-unchanged) or publishing at once: the requests and
        # pushes in flight stay within each registry's connection pool, however wide a level of
        # the graph is (a thread per image is started as soon as it is ready).
        self._registry_work = threading.BoundedSemaphore(POOL_SIZE)
        self._emit_lock = threading.Lock()
        self._emit = emit
        self.results = {
            image.name: ImageResult(
                image.name,
                tags=[TagResult(t.reference, t.target, t.floating) for t in image.tags]
                + [TagResult(t.reference, t.target, t.floating, status="held") for t in image.held_back],
            )
            for image in plan.images
        }
        self.registries = Registries(plan, engine, self.policy, self.emit, environ, self.cancelled)
        self.pulls = Pulls(engine, self.policy, self.emit, self.cancelled)
        in_registry: dict[tuple[str, str, str], str] = {}  # (image, registry, repository) -> digest there
        self.reuse = Reuse(plan, engine, self.registries, self.pulls, self.results, self.emit, in_registry)
        self.publisher = Publisher(
            engine, self.registries, self.policy, self.emit, results=self.results, in_registry=in_registry,
            cancelled=self.cancelled,
        )
        self.platforms = MultiPlatform(plan, engine, self.registries, self.policy, self.emit, self.results, self.cancelled)
        self.schedule = Scheduler(
            plan, self.jobs, emit=self.emit, results=self.results, cancelled=self.cancelled,
            grace_seconds=grace_seconds, fail_fast=fail_fast, fail=self._fail, on_interrupt=engine.cancel_builds,
        )
        self.builds = Builds(
            plan, engine, self.emit, registries=self.registries, pulls=self.pulls, reuse=self.reuse, platforms=self.platforms,
            schedule=self.schedule, results=self.results, registry_work=self._registry_work, fail=self._fail,
        )

    def emit(self, event: Event) -> None:
        with self._emit_lock:
            self._emit(event)

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> ReleaseResult:
        self.builds.read_secrets(self.environ)  # a missing one is a usage error: nothing has been built
        self.engine.connect()
        self.engine.check_docker_config()
        result = ReleaseResult(images=[self.results[i.name] for i in self.plan.images])
        if self.plan.options.push:
            self.registries.authenticate()
        try:
            self.schedule.run(self._release_image)
        except KeyboardInterrupt:  # a second interrupt: stop waiting at once
            self.cancelled.set()
            for image in result.images:
                if image.status == "pending":
                    image.status, image.error = "skipped", "release interrupted"
        result.interrupted = self.cancelled.is_set()
        result.floating = self.publisher.finish_floating(self.plan, result, self._fail)
        result.retries = self.policy.used
        return result

    def _wait_for_dependencies(self, image: PlannedImage) -> str | None:
        """Block until every dependency has settled; why this image must not push, if it must not.

        An image may build as soon as its bases are built, but it pushes only after they are
        pushed: a release never publishes an image whose base failed to publish, and the layers
        it shares with its bases are then mounted from their repositories, not uploaded again.
        """
        for dep in image.depends_on:
            self.schedule.settled(dep).wait()
            if self.results[dep].status != "released":
                return f"dependency {dep} {self.results[dep].status}"
        return None

    def _release_image(self, image: PlannedImage) -> bool:
        result = self.results[image.name]
        options = self.plan.options
        if options.stage == "platform-job" and not image.platforms:
            return self._defer(image, "left to the merge job: a platform job builds multi-platform images only")
        if options.stage == "merge" and image.platforms:  # built and pushed by the platform jobs
            self.schedule.withdraw(image)
            result.platforms = [PlatformResult(str(p)) for p in image.platforms]
            return self._push_all(image, time.monotonic())
        built = self.builds.build(image)
        if built is None:  # failed, or skipped
            return False
        if built.reused:  # nothing was built: its dependents start once its tags are in the registry
            return self._push_all(image, built.started)
        if not options.push:
            return self._built(image, built.started)
        self.schedule.built(image)  # its dependents may start building now
        return self._push_all(image, built.started)

    def _defer(self, image: PlannedImage, why: str) -> bool:
        self.schedule.withdraw(image)
        result = self.results[image.name]
        result.status, result.error = "deferred", why
        for tag in result.tags:
            tag.status = "held"
        self.emit(ImageSkipped(image=image.name, reason=why))
        return True

    def _built(self, image: PlannedImage, started: float) -> bool:
        """--no-push: built and tagged locally, and that is all."""
        result = self.results[image.name]
        for tag_result in result.tags:
            if tag_result.status == "pending":
                tag_result.status = "built"
        result.status = "built"
        result.seconds = time.monotonic() - started
        self.emit(ImageDone(image=image.name, digests={}))
        return True

    def _push_all(self, image: PlannedImage, started: float) -> bool:
        """Push the immutable tags; every tag is tried, so one registry failing does not hide another."""
        result = self.results[image.name]
        held = self._wait_for_dependencies(image)
        if held:
            result.status, result.error = "skipped", f"{held}; not pushed"
            self.emit(ImageSkipped(image=image.name, reason=result.error))
            return False
        with self._registry_work:  # taken after the wait: a holder never waits for another image
            return self._publish(image, started)

    def _publish(self, image: PlannedImage, started: float) -> bool:
        result = self.results[image.name]
        first = (image.floating_tags or image.tags or (None,))[0]
        result.previous_size = self.publisher.stored_size(first, recent=True) if first else None
        failed = []
        if image.platforms and image.name not in self.reuse.reused:
            how = {"platform-job": "children", "merge": "merge"}.get(self.plan.options.stage, "push")
            failed = self.platforms.publish(image, self.reuse.in_registry, how=how)
        # A multi-platform image's tags point at its index by now; a reused one's are added to the
        # index already in the registry, one PUT each, as a single image's other tags are.
        for tag in () if self.plan.options.stage == "platform-job" else image.immutable_tags:
            if result.tag(tag.reference).status != "pending":
                continue
            if self.cancelled.is_set():
                result.status, result.error = "interrupted", "release interrupted before its push"
                self.emit(ImageSkipped(image=image.name, reason=result.error))
                return False
            if not self.publisher.push_tag(image, tag):
                failed.append(result.tag(tag.reference).error or f"push of {tag.reference} failed")
        if failed:
            return self._fail(image.name, "push", "; ".join(dict.fromkeys(failed)))
        result.status = "released"
        if self.plan.options.stage == "platform-job":  # its platforms are in; --merge moves the tags
            for tag_result in result.tags:
                tag_result.status = "held" if tag_result.status == "pending" else tag_result.status
        if image.immutable_tags:
            tag = image.immutable_tags[0]
            result.stored_size = self.publisher.stored_size(tag, result.tag(tag.reference).digest)
        result.seconds = time.monotonic() - started
        self.emit(ImageDone(image=image.name, digests={t.reference: t.digest for t in result.tags if t.digest}))
        return True

    def _fail(self, name: str, stage: str, message: str, output: tuple[str, ...] = ()) -> bool:
        result = self.results[name]
        result.status, result.stage, result.error, result.output = "failed", stage, message, output
        self.emit(ImageFailed(image=name, stage=stage, error=message, output=output))
        return False
