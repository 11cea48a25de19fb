"""A multi-platform image: one build per platform, each platform's image pushed on its own, and
one image index per repository that every tag of the image points at.

Both builders take one platform per build request, so each platform is a build of its own, in a
build slot of its own (platforms build at once under --jobs). Locally each platform's image is
tagged `TAG-os-arch[-variant]` (the engine's own platform also gets the plain tags, as
`buildx --load` gives one), so platforms never clobber each other's tags and a dependent's
build for a platform finds its base's build for the same platform. The engine pushes tags only,
never a bare digest: each platform's image goes to the registry under its suffixed tag (of the
repository's first tag), and the index over them is stored by digest before any tag moves to it.

Across runners (`--platform-job` on each, then `--merge`), those suffixed tags are the record
each platform job leaves in the registry: the merge job finds every platform there, checks it,
and assembles the index, with the guarantees of a single run.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from imgctl.dockerfile import split_reference
from imgctl.engine import Engine
from imgctl.errors import BuildFailed, EngineUnavailable, ImgctlError
from imgctl.events import Event, IndexPushed, Tagged, Verified
from imgctl.indexes import Child, child_of, put_index, verify_index
from imgctl.plan import Plan, PlannedImage, PlannedTag
from imgctl.platforms import Platform
from imgctl.registries import Registries
from imgctl.results import ImageResult, PlatformResult
from imgctl.retry import RetryPolicy, call_with_retries
from imgctl.retry_report import reporter
from imgctl.snapshot import Snapshot


def platform_tag(tag: PlannedTag, platform: Platform) -> PlannedTag:
    """The tag naming one platform's image: `1.4.2-linux-arm64`, immutable like the image it names."""
    return dataclasses.replace(tag, tag=f"{tag.tag}-{platform.suffix}", floating=False)


def repositories(image: PlannedImage) -> dict[tuple[str, str], list[PlannedTag]]:
    """The image's tags by (registry, repository), immutable ones first: one index in each."""
    found: dict[tuple[str, str], list[PlannedTag]] = {}
    for tag in sorted(image.tags, key=lambda t: t.floating):
        found.setdefault((tag.target, tag.api_path), []).append(tag)
    return found


class PlatformFailed(ImgctlError):
    def __init__(self, stage: str, message: str, output: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.stage, self.output = stage, output


class MultiPlatform:
    def __init__(
        self, plan: Plan, engine: Engine, registries: Registries, policy: RetryPolicy,
        emit: Callable[[Event], None], results: dict[str, ImageResult], cancelled: threading.Event,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.registries = registries
        self.policy = policy
        self.emit = emit
        self.results = results
        self.cancelled = cancelled
        self.secrets: dict[str, dict[str, Any]] = {}  # image -> its build secrets and agents (set by the release)

    # -- building ------------------------------------------------------------------------

    def build(
        self, image: PlannedImage, slot: Callable[[int], Callable[[], None]], *, labels: dict[Platform, dict[str, str]],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Build every platform at once, each in a build slot (`slot(i)` waits for platform i's
        slot and returns what frees it), each sending the context from `snapshot` if given;
        raises PlatformFailed for the first platform that failed."""
        result = self.results[image.name]
        result.platforms = [PlatformResult(str(p)) for p in image.platforms]
        native = self.engine.platform()

        def one(index: int) -> None:
            platform = image.platforms[index]
            free = slot(index)
            try:
                self._build_one(image, platform, result.platforms[index], native, labels.get(platform), snapshot)
            finally:
                free()

        with ThreadPoolExecutor(max_workers=len(image.platforms), thread_name_prefix=f"imgctl-{image.name}") as pool:
            outcomes = list(pool.map(lambda i: _caught(lambda: one(i)), range(len(image.platforms))))
        failures = [f for f in outcomes if f is not None]
        if failures:
            raise failures[0]
        first = result.platforms[0]
        result.image_id, result.size, result.layers = first.image_id, first.size, first.layers

    def _build_one(
        self, image: PlannedImage, platform: Platform, into: PlatformResult, native: Platform, labels: dict[str, str] | None,
        snapshot: Snapshot | None,
    ) -> None:
        def emit(event: Event) -> None:
            self.emit(dataclasses.replace(event, platform=str(platform)))

        args = {**self._base_args(image, platform), **platform.build_args(native)}
        options = self.plan.options
        # The classic builder's cache ignores the platform: a FROM scratch stage's first
        # instruction would take another platform's cached step and fail ("does not match the
        # specified platform"). Its cache is kept to this platform's last build of the image
        # (a missing one is no error); BuildKit keys its cache by platform itself.
        cache_from = [platform_tag(image.tags[0], platform).reference] if options.builder == "classic" else None
        try:
            into.image_id = self.engine.build(
                image, no_cache=options.no_cache, pull=False, emit=emit, extra_labels=labels,
                builder=options.builder, platform=platform, build_args=args, cache_from=cache_from,
                credentials=self.registries.creds_for_host, snapshot=snapshot, **self.secrets.get(image.name, {}),
            )
        except BuildFailed as exc:
            message = f"{platform}: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
            raise PlatformFailed("build", message, exc.output) from None
        except EngineUnavailable as exc:
            raise PlatformFailed("engine", exc.message) from None
        except ImgctlError as exc:
            raise PlatformFailed("build", f"{platform}: {exc.message}") from None
        details = self.engine.inspect(into.image_id)
        into.size = details.get("Size") if isinstance(details.get("Size"), int) else None
        into.layers = len((details.get("RootFS") or {}).get("Layers") or []) or None
        local = [platform_tag(t, platform) for t in image.tags] + (list(image.tags) if platform == native else [])
        try:
            for tag in local:
                self.engine.tag(into.image_id, tag)
                emit(Tagged(image=image.name, reference=tag.reference))
        except EngineUnavailable as exc:
            raise PlatformFailed("engine", exc.message) from None
        except ImgctlError as exc:
            raise PlatformFailed("tag", exc.message) from None

    def _base_args(self, image: PlannedImage, platform: Platform) -> dict[str, str]:
        """The image's build args, with every one that names an image of this run pointed at that
        image's build for `platform`."""
        ours: dict[tuple[tuple[str, str], str], PlannedTag] = {}
        for dep in image.depends_on:
            for tag in self.plan.image(dep).tags:
                ours[split_reference(tag.reference), tag.tag] = tag
        args = {}
        for key, value in image.build_args.items():
            tag = ours.get((split_reference(value), value.rsplit(":", 1)[-1])) if ":" in value else None
            args[key] = platform_tag(tag, platform).reference if tag else value
        return args

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self, image: PlannedImage, in_registry: dict[tuple[str, str, str], str], *, how: str = "push",
    ) -> list[str]:
        """Put each platform's image in each repository, then an index over them, and point the
        immutable tags at it (floating ones move last, with every other image's). `how`:
        "push" the platforms built here; "children" push them and stop (a platform job, whose
        tags a later --merge moves); "merge" find them in the registry under their own tags
        (pushed by platform jobs) instead. Returns the failures."""
        result = self.results[image.name]
        failures: list[str] = []
        for (_target, path), tags in repositories(image).items():
            try:
                if how == "merge":
                    children = [self._find_platform(image, tags[0], p, r, path) for p, r in zip(image.platforms, result.platforms)]
                else:
                    children = [self._push_platform(image, tags[0], p, r, path) for p, r in zip(image.platforms, result.platforms)]
                if how == "children":
                    continue
                self._index(image, tags, children, in_registry)
            except ImgctlError as exc:
                failures.append(exc.message)
                for tag in tags:
                    if not tag.floating:
                        failed = result.tag(tag.reference)
                        failed.status, failed.error = "failed", exc.message
        return failures

    def _index(
        self, image: PlannedImage, tags: list[PlannedTag], children: list[Child], in_registry: dict[tuple[str, str, str], str],
    ) -> None:
        result = self.results[image.name]
        client = self.registries.client(tags[0])
        path = tags[0].api_path
        immutable = [t for t in tags if not t.floating]
        digest = call_with_retries(
            lambda: put_index(client, path, children, [t.tag for t in immutable]), policy=self.policy,
            on_retry=reporter(self.emit, image.name, f"index {tags[0].repository}"),
            cancelled=self.cancelled.is_set, registry=tags[0].host,
        )
        in_registry[(image.name, tags[0].target, path)] = digest  # floating tags are added to it last
        self.emit(IndexPushed(image=image.name, repository=tags[0].repository, digest=digest, platforms={
            str(c.platform): {"digest": c.digest, "size": r.size} for c, r in zip(children, result.platforms)
        }))
        for tag in immutable:
            call_with_retries(
                lambda: verify_index(client, path, tag.tag, digest, list(image.platforms)), policy=self.policy,
                on_retry=reporter(self.emit, image.name, f"verify {tag.reference}"),
                cancelled=self.cancelled.is_set, registry=tag.host,
            )
            done = result.tag(tag.reference)
            done.status, done.digest, done.verified = "pushed", digest, True
            self.emit(Verified(image=image.name, reference=tag.reference, digest=digest))

    def _find_platform(self, image: PlannedImage, tag: PlannedTag, platform: Platform, into: PlatformResult, path: str) -> Child:
        """--merge: the platform's image a platform job pushed, found under its own tag."""
        wanted = platform_tag(tag, platform)
        client = self.registries.client(tag)
        digest = call_with_retries(
            lambda: client.manifest_digest(path, wanted.tag), policy=self.policy,
            on_retry=reporter(self.emit, image.name, f"check {wanted.reference}"),
            cancelled=self.cancelled.is_set, registry=tag.host,
        )
        if digest is None:
            raise ImgctlError(f"{platform}: no {wanted.reference} in the registry: its platform job has not pushed it")
        child = child_of(client, path, digest, platform)
        into.digest = digest
        into.size = client.stored_size(path, digest)  # no local build to measure: what the registry stores
        return child

    def _push_platform(self, image: PlannedImage, tag: PlannedTag, platform: Platform, into: PlatformResult, path: str) -> Child:
        pushed = platform_tag(tag, platform)
        creds = self.registries.creds(tag.target)
        emit = lambda event: self.emit(dataclasses.replace(event, platform=str(platform)))  # noqa: E731
        digest, _size = call_with_retries(
            lambda: self.engine.push(image.name, pushed, creds, emit), policy=self.policy,
            on_retry=reporter(emit, image.name, f"push {pushed.reference}"),
            cancelled=self.cancelled.is_set, registry=tag.host,
        )
        into.digest = digest
        client = self.registries.client(tag)
        return call_with_retries(
            lambda: child_of(client, path, digest, platform), policy=self.policy,
            on_retry=reporter(emit, image.name, f"verify {pushed.reference}"),
            cancelled=self.cancelled.is_set, registry=tag.host,
        )


def _caught(work: Callable[[], None]) -> PlatformFailed | None:
    try:
        work()
    except PlatformFailed as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a platform's thread must always report back
        return PlatformFailed("internal", f"unexpected error: {type(exc).__name__}: {exc}")
    return None
