"""Runs a plan against the engine: a dependency graph of builds and pushes, floating tags last.

Immutable tags are pushed as soon as their image is built. Floating tags (`latest`, `1.2`, ...)
are pushed only after every image of the run has succeeded, so a failed, partial or interrupted
release never moves them. Every pushed tag is confirmed with the registry. Output only watches:
everything that happens is an event handed to `emit`.
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from imgctl.auth import Credentials, from_environment
from imgctl.engine import Engine
from imgctl.errors import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, AuthFailed, BuildFailed, EngineUnavailable, ImgctlError, VerifyFailed,
)
from imgctl.events import (
    Event, FloatingHeld, ImageDone, ImageFailed, ImageSkipped, ImageStarted, LoggedIn, Retrying, Tagged, Verified,
    Reused, TagAdded, Unchanged, Warning,
)
from imgctl.plan import OCI, Plan, PlannedImage, PlannedTag
from imgctl.context import inputs_digest
from imgctl.dockerfile import split_reference
from imgctl.refs import is_docker_hub
from imgctl.registry import RegistryClient
from imgctl.units import human_bytes
from imgctl.retry import RetryPolicy, call_with_retries
from imgctl.slots import BuildSlots

Emit = Callable[[Event], None]


INPUTS_LABEL = "io.imgctl.inputs"  # digest of everything a build read: --skip-unchanged compares it
FLOATING_AT_ONCE = 8  # repositories whose floating tags are set at once, once every image is released


def default_jobs() -> int:
    # Twice the cores: a build step that waits (a commit, a container start, the context upload)
    # leaves its core to another build, and fewer cores sit idle when a level of the graph ends.
    return max(4, 2 * (os.cpu_count() or 1))


@dataclass
class TagResult:
    reference: str
    target: str
    floating: bool
    status: str = "pending"  # pushed | unchanged | built | held | failed | pending
    digest: str | None = None
    verified: bool = False
    error: str | None = None


@dataclass
class ImageResult:
    name: str
    status: str = "pending"  # released | built | failed | skipped | interrupted | pending
    image_id: str | None = None
    size: int | None = None
    layers: int | None = None
    stored_size: int | None = None  # in the registry (compressed), after this run
    previous_size: int | None = None  # in the registry, of what the same tag held before this run
    seconds: float = 0.0
    stage: str | None = None
    error: str | None = None
    output: tuple[str, ...] = ()
    tags: list[TagResult] = field(default_factory=list)

    def tag(self, reference: str) -> TagResult:
        return next(t for t in self.tags if t.reference == reference)


@dataclass
class ReleaseResult:
    images: list[ImageResult]
    floating: str = "none"  # pushed | held back: why | none
    interrupted: bool = False
    retries: int = 0

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(i.status in ("released", "built") for i in self.images)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.ok else EXIT_FAILED


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
        self._slots = BuildSlots(self.jobs)
        self._rank = plan.build_order()
        self._holding: set[str] = set()  # images with a build slot, until the scheduler takes it back
        self._stop_reason: str | None = None  # set by the scheduler: images not yet building give up
        self._pulled: set[str] = set()
        self._pull_lock = threading.Lock()
        self._reuse: dict[tuple[str, str, str], str] = {}  # (image, registry, repository) -> digest whose inputs match
        self._settled = {image.name: threading.Event() for image in plan.images}  # its worker ended, or it was skipped
        self._finished: queue.Queue[tuple[str, str]] = queue.Queue()  # (image, built | done | failed) for the scheduler
        self._emit_lock = threading.Lock()
        self._emit = emit
        self._creds: dict[str, Credentials | None] = {}
        self._registries: dict[str, RegistryClient] = {}
        self.results = {
            image.name: ImageResult(
                image.name,
                tags=[TagResult(t.reference, t.target, t.floating) for t in image.tags]
                + [TagResult(t.reference, t.target, t.floating, status="held") for t in image.held_back],
            )
            for image in plan.images
        }

    def emit(self, event: Event) -> None:
        with self._emit_lock:
            self._emit(event)

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> ReleaseResult:
        self.engine.connect()
        self.engine.check_docker_config()
        result = ReleaseResult(images=[self.results[i.name] for i in self.plan.images])
        if self.plan.options.push:
            self._authenticate()
        try:
            self._run_graph()
        except KeyboardInterrupt:  # a second interrupt: stop waiting at once
            self.cancelled.set()
            for image in result.images:
                if image.status == "pending":
                    image.status, image.error = "skipped", "release interrupted"
        result.interrupted = self.cancelled.is_set()
        result.floating = self._finish_floating(result)
        result.retries = self.policy.used
        return result

    def _authenticate(self) -> None:
        """Credentials for every target, checked with the registry before anything is built: one
        token request for push to every repository the release writes there."""
        paths: dict[str, list[str]] = {}
        for image in self.plan.images:
            for tag in image.tags + image.held_back:
                paths.setdefault(tag.target, [])
                if tag.api_path not in paths[tag.target]:
                    paths[tag.target].append(tag.api_path)
        for target in self.plan.targets:
            if target.key not in paths:
                continue
            creds = from_environment(target.host, target.username_env, target.password_env, self.environ)
            if creds is None:
                creds = self.engine.config_credentials(target.host)
            registry = RegistryClient(target.host, creds)
            if creds is not None:
                call_with_retries(
                    lambda: registry.check_access(paths[target.key]),
                    policy=self.policy,
                    on_retry=self._retry_reporter(None, f"login to {target.host}"),
                )
                self.emit(LoggedIn(registry=target.host, username=creds.username, source=creds.source))
            self._creds[target.key] = creds
            self._registries[target.key] = registry

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
                if running:
                    self.emit(Warning(message=(
                        f"interrupted: starting nothing new; waiting up to {self.grace_seconds:.0f}s for "
                        f"{', '.join(sorted(running))} (interrupt again to stop now)"
                    )))
            self._stop_reason = stop_reason
            if stop_reason is None:
                ready = [n for n in waiting if all(state.get(d) in ("built", "done") for d in self.plan.image(n).depends_on)]
                for name in ready:  # all queued before any starts: a started one may ask for a slot at once
                    self._slots.queue(self._rank[name])
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

    # -- one image -----------------------------------------------------------------------

    def _worker(self, image: PlannedImage) -> None:
        ok = False
        try:
            ok = self._release_image(image)
        except ImgctlError as exc:  # e.g. the engine went away between two steps
            self._fail(image.name, "engine", exc.message)
        except BaseException as exc:  # noqa: BLE001 - a worker must always report back
            self._fail(image.name, "internal", f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self._slots.withdraw(self._rank[image.name])  # if it ended before asking for its slot
            self._settled[image.name].set()
            outcome = "done" if ok else "skipped" if self.results[image.name].status == "skipped" else "failed"
            self._finished.put((image.name, outcome))

    def _wait_for_dependencies(self, image: PlannedImage) -> str | None:
        """Block until every dependency has settled; why this image must not push, if it must not.

        An image may build as soon as its bases are built, but it pushes only after they are
        pushed: a release never publishes an image whose base failed to publish, and the layers
        it shares with its bases are then mounted from their repositories, not uploaded again.
        """
        for dep in image.depends_on:
            self._settled[dep].wait()
            if self.results[dep].status != "released":
                return f"dependency {dep} {self.results[dep].status}"
        return None

    def _release_image(self, image: PlannedImage) -> bool:
        result = self.results[image.name]
        options = self.plan.options
        if options.pull:
            self._refresh_bases(image)
        self._fetch_reused_bases(image)
        # Every pushed image carries its inputs digest, so any later run can use --skip-unchanged.
        inputs = self._inputs(image) if options.push else None
        if inputs and options.skip_unchanged and self._find_same_inputs(image, inputs):
            self._slots.withdraw(self._rank[image.name])  # nothing to build; dependents start once its
            return self._push_all(image, time.monotonic())  # tags are in the registry, to pull from there
        self._slots.acquire(self._rank[image.name])
        self._holding.add(image.name)  # the scheduler takes the slot back at this image's next message
        if self._stop_reason:
            result.status, result.error = "skipped", self._stop_reason
            self.emit(ImageSkipped(image=image.name, reason=self._stop_reason))
            return False
        started = time.monotonic()
        self.emit(ImageStarted(image=image.name))
        try:
            result.image_id = self.engine.build(  # bases were refreshed above: the builder must not
                image, no_cache=options.no_cache, pull=False, emit=self.emit,  # pull this run's own images
                extra_labels={INPUTS_LABEL: inputs} if inputs else None, builder=options.builder,
            )
        except BuildFailed as exc:
            message = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            return self._fail(image.name, "build", message, exc.output)
        except EngineUnavailable as exc:
            return self._fail(image.name, "engine", exc.message)
        except ImgctlError as exc:
            return self._fail(image.name, "build", exc.message)
        details = self.engine.inspect(result.image_id)
        result.size = details.get("Size") if isinstance(details.get("Size"), int) else None
        result.layers = len((details.get("RootFS") or {}).get("Layers") or []) or None
        if image.max_size and result.size and result.size > image.max_size:
            return self._fail(
                image.name, "size", f"image is {human_bytes(result.size)}, over its max_size of {human_bytes(image.max_size)}"
            )
        try:
            for tag in image.tags:
                self.engine.tag(result.image_id, tag)
                self.emit(Tagged(image=image.name, reference=tag.reference))
        except EngineUnavailable as exc:
            return self._fail(image.name, "engine", exc.message)
        except ImgctlError as exc:
            return self._fail(image.name, "tag", exc.message)
        if not options.push:
            for tag_result in result.tags:
                if tag_result.status == "pending":
                    tag_result.status = "built"
            result.status = "built"
            result.seconds = time.monotonic() - started
            self.emit(ImageDone(image=image.name, digests={}))
            return True
        self._finished.put((image.name, "built"))  # its dependents may start building now
        return self._push_all(image, started)

    def _push_all(self, image: PlannedImage, started: float) -> bool:
        """Push the immutable tags; every tag is tried, so one registry failing does not hide another."""
        result = self.results[image.name]
        held = self._wait_for_dependencies(image)
        if held:
            result.status, result.error = "skipped", f"{held}; not pushed"
            self.emit(ImageSkipped(image=image.name, reason=result.error))
            return False
        first = (image.floating_tags or image.tags or (None,))[0]
        result.previous_size = self._stored_size(first) if first else None
        failed = []
        for tag in image.immutable_tags:
            if self.cancelled.is_set():
                result.status, result.error = "interrupted", "release interrupted before its push"
                self.emit(ImageSkipped(image=image.name, reason=result.error))
                return False
            if not self._push_tag(image, tag):
                failed.append(result.tag(tag.reference).error or f"push of {tag.reference} failed")
        if failed:
            return self._fail(image.name, "push", "; ".join(dict.fromkeys(failed)))
        result.status = "released"
        result.stored_size = self._stored_size(image.immutable_tags[0]) if image.immutable_tags else None
        result.seconds = time.monotonic() - started
        self.emit(ImageDone(image=image.name, digests={t.reference: t.digest for t in result.tags if t.digest}))
        return True

    # -- --skip-unchanged ----------------------------------------------------------------

    def _inputs(self, image: PlannedImage) -> str | None:
        """The digest of everything the build reads; None when a base image's digest is unknown."""
        bases: dict[str, str] = {}
        for base in image.bases:
            digest = self._base_digest(base)
            if digest is None:
                return None
            bases[split_reference(base)[1]] = digest
        # created and version change on every run without changing the image: leave them out, so a
        # reused image keeps the labels of the build it came from.
        labels = {k: v for k, v in image.labels.items() if k not in (OCI + "created", OCI + "version")}
        facts = {f"arg:{k}": v for k, v in image.build_args.items()}
        facts |= {f"label:{k}": v for k, v in labels.items()} | {"target": image.target or ""}
        try:
            return inputs_digest(image.context, image.dockerfile, facts, bases)
        except ImgctlError:
            return None  # the build will report the problem

    def _refresh_bases(self, image: PlannedImage) -> None:
        """--pull: fetch the newest of each base image that this run does not build itself."""
        ours = {split_reference(t.reference) for i in self.plan.images for t in i.tags + i.held_back}
        for base in image.bases:
            with self._pull_lock:
                if base in self._pulled or split_reference(base) in ours:
                    continue
                self._pulled.add(base)
                problem = self.engine.pull(base, self._creds_for(base))
            if problem:
                self.emit(Warning(image=image.name, message=f"could not refresh base image {base}: {problem}"))

    def _creds_for(self, reference: str) -> Credentials | None:
        """The credentials imgctl has for the registry of `reference` if the config pushes there
        (BuildKit could pull a base behind credentials with none); else None: the docker config's."""
        host = split_reference(reference)[0]
        for target in self.plan.targets:
            if target.host == host or (is_docker_hub(target.host) and is_docker_hub(host)):
                return self._creds.get(target.key)
        return None

    def _fetch_reused_bases(self, image: PlannedImage) -> None:
        """A base that --skip-unchanged reused was never built here: pull it, with its registry's credentials."""
        for dep in image.depends_on:
            if not any(key[0] == dep for key in self._reuse):
                continue
            for base in image.bases:
                tag = next((t for t in self.plan.image(dep).tags if split_reference(t.reference) == split_reference(base)), None)
                if tag and self.engine.local_image_id(base) is None:
                    problem = self.engine.pull(base, self._creds.get(tag.target))
                    if problem:
                        self.emit(Warning(image=image.name, message=f"could not pull the reused base {base}: {problem}"))

    def _base_digest(self, base: str) -> str | None:
        """The image id of a base image: for an image of this run, the one it built or reused (its
        dependents build once it is built, before any push); else the local image's."""
        repository = split_reference(base)
        for image in self.plan.images:
            if any(split_reference(r.reference) == repository for r in self.results[image.name].tags):
                return self.results[image.name].image_id
        return self.engine.local_image_id(base)

    def _find_same_inputs(self, image: PlannedImage, inputs: str) -> bool:
        """True if every registry already holds an image of this one's tags built from the same inputs."""
        found: dict[tuple[str, str], str] = {}  # every repository must hold it: a tag is added there
        image_id: str | None = None
        for tag in image.tags + image.held_back:
            if (tag.target, tag.api_path) in found:
                continue
            registry = self._registry(tag)
            try:
                seen = registry.inputs_of(tag.api_path, tag.tag, INPUTS_LABEL)
            except ImgctlError:
                seen = None
            if seen and seen[2] == inputs:
                found[tag.target, tag.api_path] = seen[0]
                image_id = image_id or seen[1]
        if {(t.target, t.api_path) for t in image.tags} - set(found):
            return False
        self.results[image.name].image_id = image_id
        for (target, path), digest in found.items():
            self._reuse[(image.name, target, path)] = digest
        self.emit(Reused(image=image.name, inputs=inputs))
        return True

    def _push_tag(self, image: PlannedImage, tag: PlannedTag) -> bool:
        """Push one tag (retrying transient faults), then confirm its digest with the registry."""
        result = self.results[image.name]
        tag_result = result.tag(tag.reference)
        creds = self._creds.get(tag.target)
        registry = self._registry(tag)
        try:
            current = self._current_digest(registry, image.name, tag)
            reuse = self._in_repository(image, tag)
            same = current == reuse if reuse else bool(
                current and result.image_id and current in self.engine.pushed_digests(result.image_id, tag.repository)
            )
            if current and same:
                # A re-run: the registry already holds this very image under this tag.
                tag_result.status, tag_result.digest, tag_result.verified = "unchanged", current, True
                self.emit(Unchanged(image=image.name, reference=tag.reference, digest=current))
                return True
            if reuse:  # the image is in that repository already: point the tag at it, nothing to push
                call_with_retries(
                    lambda: registry.add_tag(tag.api_path, reuse, tag.tag),
                    policy=self.policy,
                    on_retry=self._retry_reporter(image.name, f"tag {tag.reference}"),
                    cancelled=self.cancelled.is_set,
                )
                digest = reuse
                self.emit(TagAdded(image=image.name, reference=tag.reference, digest=digest))
            else:
                digest, _size = call_with_retries(
                    lambda: self.engine.push(image.name, tag, creds, self.emit),
                    policy=self.policy,
                    on_retry=self._retry_reporter(image.name, f"push {tag.reference}"),
                    cancelled=self.cancelled.is_set,
                )
            tag_result.digest = digest
            found = call_with_retries(
                lambda: registry.manifest_digest(tag.api_path, tag.tag),
                policy=self.policy,
                on_retry=self._retry_reporter(image.name, f"verify {tag.reference}"),
            )
            if found != digest:
                raise VerifyFailed(
                    f"{tag.reference}: the push reported {digest} but the registry holds {found or 'no such tag'}"
                )
        except (ImgctlError, OSError) as exc:
            tag_result.status = "failed"
            tag_result.error = exc.message if isinstance(exc, ImgctlError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, AuthFailed) and exc.hint:
                tag_result.error += f" ({exc.hint})"
            return False
        except Exception as exc:  # noqa: BLE001 - transport errors that outlived the retries
            tag_result.status = "failed"
            tag_result.error = f"push of {tag.reference} failed: {type(exc).__name__}: {exc}"
            return False
        tag_result.status, tag_result.verified = "pushed", True
        self.emit(Verified(image=image.name, reference=tag.reference, digest=digest))
        return True

    def _in_repository(self, image: PlannedImage, tag: PlannedTag) -> str | None:
        """The manifest digest of this image already in the tag's repository, if any.

        Either --skip-unchanged found it there, or another tag of the image was pushed and verified
        there this run. A tag then costs one manifest PUT, not a push through the engine (which
        would check every layer again).
        """
        reused = self._reuse.get((image.name, tag.target, tag.api_path))
        if reused:
            return reused
        result = self.results[image.name]
        for other in image.tags:
            if other.target == tag.target and other.api_path == tag.api_path and other.tag != tag.tag:
                done = result.tag(other.reference)
                if done.verified and done.digest:
                    return done.digest
        return None

    def _registry(self, tag: PlannedTag) -> RegistryClient:
        """The client for the tag's registry (made at login; made here when nothing is pushed)."""
        if tag.target not in self._registries:
            self._registries[tag.target] = RegistryClient(tag.host, self._creds.get(tag.target))
        return self._registries[tag.target]

    def _stored_size(self, tag: PlannedTag) -> int | None:
        registry = self._registry(tag)
        try:
            return registry.stored_size(tag.api_path, tag.tag)
        except ImgctlError:
            return None  # a size is a nicety: never fail a release over it

    def _current_digest(self, registry: RegistryClient, image: str, tag: PlannedTag) -> str | None:
        """What the tag points at now; None if unknown. The push itself reports refusals best."""
        try:
            return call_with_retries(
                lambda: registry.manifest_digest(tag.api_path, tag.tag),
                policy=self.policy,
                on_retry=self._retry_reporter(image, f"check {tag.reference}"),
            )
        except AuthFailed:
            return None

    def _fail(self, name: str, stage: str, message: str, output: tuple[str, ...] = ()) -> bool:
        result = self.results[name]
        result.status, result.stage, result.error, result.output = "failed", stage, message, output
        self.emit(ImageFailed(image=name, stage=stage, error=message, output=output))
        return False

    def _retry_reporter(self, image: str | None, action: str) -> Callable[[int, int, float, BaseException], None]:
        def report(attempt: int, attempts: int, wait: float, exc: BaseException) -> None:
            reason = exc.message if isinstance(exc, ImgctlError) else f"{type(exc).__name__}: {exc}"
            self.emit(Retrying(image=image, action=action, attempt=attempt, attempts=attempts, wait=wait, reason=reason[:300]))

        return report

    # -- floating tags, last -------------------------------------------------------------

    def _finish_floating(self, result: ReleaseResult) -> str:
        floating = [(image, tag) for image in self.plan.images for tag in image.floating_tags]
        held = [t.reference for image in self.plan.images for t in image.held_back]
        if held and self.plan.held_back_reason:
            self.emit(FloatingHeld(reason=self.plan.held_back_reason, references=tuple(held)))
        if not floating:
            return f"held back: {self.plan.held_back_reason}" if held else "none"
        if not self.plan.options.push:
            return "not pushed (--no-push)"
        failed = [i for i in result.images if i.status != "released"]
        if result.interrupted or failed:
            why = "release interrupted" if result.interrupted else _count_failures(failed)
            for image, tag in floating:
                self.results[image.name].tag(tag.reference).status = "held"
            self.emit(FloatingHeld(reason=why, references=tuple(t.reference for _, t in floating)))
            return f"held back: {why}"
        # Each is a few small requests (the image is in the repository by now: usually a manifest
        # PUT, no layers), so repositories are served at once: this phase is the release's tail.
        # Within one repository they go one after another: docker-registry's filesystem storage
        # rewrites the manifest's revision link on each tag PUT, and a read of it racing that
        # write gets a 500 ("invalid checksum digest format"), which costs a retry.
        by_repository: dict[str, list[tuple[PlannedImage, PlannedTag]]] = {}
        for image, tag in floating:
            by_repository.setdefault(tag.repository, []).append((image, tag))
        with ThreadPoolExecutor(max_workers=FLOATING_AT_ONCE, thread_name_prefix="imgctl-floating") as pool:
            outcomes = pool.map(lambda tasks: [self._push_tag(*task) for task in tasks], by_repository.values())
            pushed = {
                tag.reference: ok for tasks, oks in zip(by_repository.values(), outcomes) for (_, tag), ok in zip(tasks, oks)
            }
        for image in self.plan.images:
            errors = [
                self.results[image.name].tag(tag.reference).error or f"push of {tag.reference} failed"
                for owner, tag in floating if owner is image and not pushed[tag.reference]
            ]
            if errors:
                self._fail(image.name, "push", "; ".join(dict.fromkeys(errors)))
        return "pushed" if result.ok else "partly pushed"


def _count_failures(images: list[ImageResult]) -> str:
    failed = sum(1 for i in images if i.status == "failed")
    skipped = len(images) - failed
    parts = [f"{failed} image{'s' if failed != 1 else ''} failed"] if failed else []
    parts += [f"{skipped} skipped"] if skipped else []
    return ", ".join(parts)
