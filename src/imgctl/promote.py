"""`imgctl promote`: point a version's tags at what an earlier release already holds, with no build.

Two plans of the same config, one per version, say what moves: each image's source is its first
immutable tag of the source version (the first that names that version, e.g. `{version}` as
`1.4.0-rc.2`), and its destinations are every tag the target version's plan gives it. Within one
registry (the default) a tag is one manifest PUT of the manifest read from the source; from one
registry to another (`from_registry`, `to_registry`) the manifest is first copied whole into each
destination repository (blobcopy.py: blobs mounted within a registry, streamed otherwise; an
index's children before it), stored by its digest, and only then do tags move.

What a release guarantees holds here too: every source is found before anything moves (a missing
one fails the promotion, naming it); immutable tags move image by image as each is copied;
floating tags only once every image succeeded, else none; every tag is read back and must hold
the source's digest. The result is a ReleaseResult, so the summary, --report and GitHub outputs
render it as they render a release.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from imgctl.auth import Credentials, find_credentials
from imgctl.blobcopy import BlobMoved, KnownBlobs, Repo, copy_manifest, read_manifest
from imgctl.errors import AuthFailed, ImgctlError, UsageError, VerifyFailed
from imgctl.events import (
    BlobCopied, Event, FloatingHeld, ImageDone, ImageFailed, ImageStarted, LoggedIn, SourceResolved, TagAdded, Unchanged,
    Verified, Warning,
)
from imgctl.indexes import platform_digests
from imgctl.plan import Plan, PlannedTag, TagKinds, Target
from imgctl.refs import is_docker_hub
from imgctl.publish import move_floating
from imgctl.registry import Manifest, RegistryClient
from imgctl.results import ImageResult, PlatformResult, ReleaseResult, TagResult
from imgctl.retry import RetryPolicy, call_with_retries
from imgctl.retry_report import reporter
from imgctl.transport import is_loopback

T = TypeVar("T")
Emit = Callable[[Event], None]
IMAGES_AT_ONCE = 4  # images copied at once; within one repository, requests go one after another


class SourceMissing(ImgctlError):
    """An image's source tag is not in the registry: nothing was moved."""


# -- what moves (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePromotion(TagKinds):
    name: str
    source: PlannedTag  # the tag of the release promoted from (its `floating` is False)
    tags: tuple[PlannedTag, ...]  # immutable first
    held_back: tuple[PlannedTag, ...] = ()


@dataclass(frozen=True)
class Promotion:
    images: tuple[ImagePromotion, ...]
    source_version: str
    version: str
    held_back_reason: str | None
    targets: tuple[Target, ...]
    skipped: tuple[str, ...] = ()  # images with no tag in any destination: warnings


def _target(plan: Plan, name: str, flag: str) -> Target:
    """A `registries:` entry by its name, else by its host (which must then be unambiguous)."""
    by_key = [t for t in plan.targets if t.key == name]
    by_host = [t for t in plan.targets if t.host == name]
    if by_key:
        return by_key[0]
    if len(by_host) == 1:
        return by_host[0]
    names = ", ".join(t.key for t in plan.targets)
    if by_host:
        raise UsageError(f"{flag} {name}: several registries of the config are at {name}", hint=f"Name one: {names}")
    raise UsageError(f"{flag} {name}: no such registry in the config", hint=f"Registries: {names}")


def _source_tag(plan_from: Plan, name: str, target: str) -> PlannedTag:
    """The image's first immutable tag at `target` that names the source version, else its first
    immutable tag there (a `{git_sha}` tag renders today's commit, not the source's: last resort)."""
    image = plan_from.image(name)
    tags = [t for t in image.immutable_tags if t.target == target]
    if not tags:
        raise UsageError(
            f"image {name} has no immutable tag (one naming {{version}}) at registry {target} to find version "
            f"{plan_from.version} by", hint="Give the image a `{version}` tag, as a release would push.",
        )
    version = plan_from.version or ""
    return next((t for t in tags if version and version in t.tag), tags[0])


def plan_promotion(
    plan_from: Plan, plan_to: Plan, *, from_registry: str | None = None, to_registry: tuple[str, ...] = (),
) -> Promotion:
    """What moves where. Without `from_registry`, within each registry: an image's tags at each
    registry (or only at those of `to_registry`) move to its source there. With `from_registry`,
    from that registry to every other configured one (or to those of `to_registry`)."""
    if plan_from.version is None or plan_to.version is None:
        raise UsageError("promote needs both versions: --from VERSION and --version VERSION")
    destinations = [_target(plan_to, name, "--to-registry") for name in to_registry]
    source_target = _target(plan_to, from_registry, "--from-registry") if from_registry else None
    if source_target is not None:
        destinations = [t for t in destinations if t.key != source_target.key] if destinations else [
            t for t in plan_to.targets if t.key != source_target.key]
        if to_registry and not destinations:
            destinations = [source_target]  # --from-registry X --to-registry X: within X
        if not destinations:
            raise UsageError(f"--from-registry {from_registry}: the config has no other registry to promote to",
                             hint="Leave out --from-registry to promote within each registry.")
    wanted = {t.key for t in destinations} or {t.key for t in plan_to.targets}
    images: list[ImagePromotion] = []
    skipped: list[str] = []
    for image in plan_to.images:
        image_targets = list(dict.fromkeys(t.target for t in image.tags + image.held_back))
        if source_target is not None and source_target.key not in image_targets and wanted != {source_target.key}:
            raise UsageError(f"image {image.name} is not released to registry {source_target.key}, so it cannot "
                             f"be promoted from there (its registries: {', '.join(image_targets)})")
        for key in [k for k in image_targets if k in wanted]:
            origin = source_target.key if source_target is not None else key
            tag = _source_tag(plan_from, image.name, origin)
            source = dataclasses.replace(tag, floating=False)
            mine = [t for t in image.tags if t.target == key]  # the source's own tag, if there: unchanged
            held = tuple(t for t in image.held_back if t.target == key)
            existing = next((i for i, p in enumerate(images) if p.name == image.name and p.source == source), None)
            ordered = tuple(sorted(mine, key=lambda t: t.floating))
            if existing is not None:  # one source, several destination registries
                before = images[existing]
                images[existing] = ImagePromotion(image.name, source, tuple(sorted(before.tags + ordered,
                                                  key=lambda t: t.floating)), before.held_back + held)
            else:
                images.append(ImagePromotion(image.name, source, ordered, held))
        if not any(p.name == image.name for p in images):
            skipped.append(image.name)
    return Promotion(tuple(images), plan_from.version, plan_to.version, plan_to.held_back_reason, plan_to.targets,
                     tuple(skipped))


def promotion_text(promotion: Promotion) -> str:
    """The plan of what would move, for --dry-run: per image, its source, then each tag."""
    lines = [f"Promote {promotion.source_version} to {promotion.version}: {len(promotion.images)} "
             f"source{'s' if len(promotion.images) != 1 else ''}"]
    for image in promotion.images:
        lines.append(f"{image.name}  from {image.source.reference}")
        for tag in image.tags:
            lines.append(f"  -> {tag.reference}  [{'floating, last' if tag.floating else 'immutable'}]")
        for tag in image.held_back:
            lines.append(f"  -> {tag.reference}  [held back: {promotion.held_back_reason}]")
    for name in promotion.skipped:
        lines.append(f"{name}  (no tag in the destination registries: not promoted)")
    return "\n".join(lines)


# -- doing it ----------------------------------------------------------------------------------


class _Promoter:
    def __init__(
        self, promotion: Promotion, emit: Emit, policy: RetryPolicy, environ: dict[str, str] | None,
        cancelled: threading.Event, insecure: Callable[[], frozenset[str]] | None, jobs: int,
    ) -> None:
        self.promotion = promotion
        self.policy = policy
        self.environ = environ
        self.cancelled = cancelled
        self.insecure = insecure
        self.jobs = max(1, jobs)
        self._emit_lock = threading.Lock()
        self._emit = emit
        self._insecure: frozenset[str] | None = None
        self._clients: dict[str, RegistryClient] = {}
        self.known = KnownBlobs()
        self.sources: dict[tuple[str, PlannedTag], Manifest] = {}
        self.results: dict[str, ImageResult] = {}
        for image in promotion.images:
            result = self.results.setdefault(image.name, ImageResult(image.name))
            result.tags += [TagResult(t.reference, t.target, t.floating) for t in image.tags]
            result.tags += [TagResult(t.reference, t.target, t.floating, status="held") for t in image.held_back]

    def emit(self, event: Event) -> None:
        with self._emit_lock:
            self._emit(event)

    def retrying(self, image: str | None, host: str) -> Callable[[str, Callable[[], T]], T]:
        def run(what: str, operation: Callable[[], T]) -> T:
            return call_with_retries(operation, policy=self.policy, on_retry=reporter(self.emit, image, what),
                                     cancelled=self.cancelled.is_set, registry=host)
        return run

    def client(self, key: str) -> RegistryClient:
        return self._clients[key]

    # -- before anything moves ---------------------------------------------------------------

    def connect(self) -> None:
        """Credentials for every registry involved, checked: pull on the sources, pull,push on the destinations."""
        paths: dict[str, dict[str, str]] = {}  # target -> repository -> actions
        for image in self.promotion.images:
            paths.setdefault(image.source.target, {}).setdefault(image.source.api_path, "pull")
            for tag in image.tags + image.held_back:
                paths.setdefault(tag.target, {})[tag.api_path] = "pull,push"
        for target in self.promotion.targets:
            if target.key not in paths:
                continue
            creds = find_credentials(target.host, target.username_env, target.password_env, self.environ)
            client = self._new_client(target.host, creds)
            self._clients[target.key] = client
            if creds is None:
                continue
            for actions in ("pull,push", "pull"):
                chosen = [path for path, wanted in paths[target.key].items() if wanted == actions]
                if chosen:
                    self.retrying(None, target.host)(f"login to {target.host}",
                                                     lambda: client.check_access(chosen, actions))
            self.emit(LoggedIn(registry=target.host, username=creds.username, source=creds.source))

    def _new_client(self, host: str, creds: Credentials | None) -> RegistryClient:
        if is_loopback(host) or is_docker_hub(host) or self.insecure is None:
            return RegistryClient(host, creds)
        if self._insecure is None:
            self._insecure = self.insecure()
        return RegistryClient(host, creds, insecure=self._insecure)

    def resolve(self) -> None:
        """Every image's source manifest, read now; a missing one fails the promotion before anything moves."""
        missing: list[str] = []
        for image in self.promotion.images:
            source = image.source
            repo = Repo(self.client(source.target), source.api_path)
            found = self.retrying(image.name, source.host)(
                f"read {source.reference}", lambda: read_manifest(repo, source.tag))
            if found is None:
                missing.append(f"{image.name} ({source.reference})")
                continue
            self.sources[image.name, source] = found
        if missing:
            raise SourceMissing(
                f"cannot promote {self.promotion.source_version} to {self.promotion.version}: no source image for "
                + ", ".join(dict.fromkeys(missing)) + "; nothing was moved",
                hint=f"Release {self.promotion.source_version} first, or check --from.",
            )

    # -- one image ---------------------------------------------------------------------------

    def image(self, image: ImagePromotion) -> None:
        result = self.results[image.name]
        started = time.monotonic()
        manifest = self.sources[image.name, image.source]
        if self.cancelled.is_set():
            if result.status == "pending":
                result.status, result.error = "skipped", "promotion interrupted"
            return
        self.emit(ImageStarted(image=image.name))
        self.emit(SourceResolved(image=image.name, reference=image.source.reference, digest=manifest.digest,
                                 media_type=manifest.media_type))
        source = Repo(self.client(image.source.target), image.source.api_path)
        try:
            by_repository: dict[tuple[str, str], list[PlannedTag]] = {}
            for tag in image.tags + image.held_back:
                by_repository.setdefault((tag.target, tag.api_path), [])
                if not tag.floating:
                    by_repository[tag.target, tag.api_path].append(tag)
            for (target, path), tags in by_repository.items():
                destination = Repo(self.client(target), path)
                repository = f"{destination.where}"

                def moved(blob: BlobMoved, repository: str = repository) -> None:
                    self.emit(BlobCopied(image=image.name, reference=repository, digest=blob.digest, size=blob.size,
                                         how=blob.how))

                copy_manifest(source, destination, manifest, known=self.known,
                              retrying=self.retrying(image.name, destination.client.host), on_blob=moved)
                for tag in tags:
                    if not self.put_tag(image.name, tag, manifest):
                        raise _TagFailed(result.tag(tag.reference).error or f"tagging {tag.reference} failed")
        except (ImgctlError, OSError, _TagFailed) as exc:
            self.fail(result, "promote", _message(exc))
            return
        except Exception as exc:  # noqa: BLE001 - transport errors that outlived the retries
            self.fail(result, "promote", f"{type(exc).__name__}: {exc}")
            return
        finally:
            result.seconds = time.monotonic() - started
        if result.status == "pending":
            result.status = "released"
            self._describe(result, source, manifest)
            digests = {t.reference: t.digest for t in result.tags if t.digest and not t.floating}
            self.emit(ImageDone(image=image.name, digests=digests))

    def _describe(self, result: ImageResult, source: Repo, manifest: Manifest) -> None:
        """Its stored size and, for an index, each platform's digest: niceties, never a failure."""
        try:
            result.stored_size = source.client.stored_size(source.path, manifest.digest)
            if manifest.is_index:
                children = platform_digests(source.client, source.path, manifest.digest)
                result.platforms = [PlatformResult(platform, digest=digest) for platform, digest in children.items()]
        except ImgctlError:
            pass

    def fail(self, result: ImageResult, stage: str, error: str) -> None:
        if result.status == "failed":
            result.error = f"{result.error}; {error}"
            return
        result.status, result.stage, result.error = "failed", stage, error
        self.emit(ImageFailed(image=result.name, stage=stage, error=error))

    def put_tag(self, image: str, tag: PlannedTag, manifest: Manifest) -> bool:
        """Point `tag` at `manifest` (in its repository by now): one PUT, then read back."""
        result = self.results[image].tag(tag.reference)
        client = self.client(tag.target)
        run = self.retrying(image, tag.host)
        digest = manifest.digest
        try:
            current = run(f"check {tag.reference}", lambda: client.manifest_digest(tag.api_path, tag.tag))
            if current == digest:
                result.status, result.digest, result.verified = "unchanged", digest, True
                self.emit(Unchanged(image=image, reference=tag.reference, digest=digest))
                return True
            if current is not None and not tag.floating:
                self.emit(Warning(image=image, message=f"{tag.reference} held {current}; it now points at {digest}"))
            run(f"tag {tag.reference}",
                lambda: client.put_manifest(tag.api_path, tag.tag, manifest.body, manifest.media_type))
            result.digest = digest
            self.emit(TagAdded(image=image, reference=tag.reference, digest=digest))
            found = run(f"verify {tag.reference}", lambda: client.manifest_digest(tag.api_path, tag.tag))
            if found != digest:
                raise VerifyFailed(f"{tag.reference}: tagged {digest} but the registry holds {found or 'no such tag'}")
        except (ImgctlError, OSError) as exc:
            result.status, result.error = "failed", _message(exc)
            return False
        except Exception as exc:  # noqa: BLE001
            result.status, result.error = "failed", f"tagging {tag.reference} failed: {type(exc).__name__}: {exc}"
            return False
        result.status, result.verified = "pushed", True
        self.emit(Verified(image=image, reference=tag.reference, digest=digest))
        return True

    # -- floating tags, last ---------------------------------------------------------------------

    def floating(self, result: ReleaseResult) -> str:
        floating = [(image, tag) for image in self.promotion.images for tag in image.floating_tags]
        held = [t.reference for image in self.promotion.images for t in image.held_back]
        if held and self.promotion.held_back_reason:
            self.emit(FloatingHeld(reason=self.promotion.held_back_reason, references=tuple(held)))
        if not floating:
            return f"held back: {self.promotion.held_back_reason}" if held else "none"
        moved = move_floating(floating, result, self.results, self.emit, self._put_floating, what="promotion")
        if isinstance(moved, str):
            return moved
        for image, tag in floating:
            if not moved[tag.reference]:
                self.fail(self.results[image.name], "push", self.results[image.name].tag(tag.reference).error
                          or f"tagging {tag.reference} failed")
        return "pushed" if result.ok else "partly pushed"

    def _put_floating(self, image: ImagePromotion, tag: PlannedTag) -> bool:
        return self.put_tag(image.name, tag, self.sources[image.name, image.source])

    def run(self) -> ReleaseResult:
        self.connect()
        self.resolve()
        result = ReleaseResult(images=list(self.results.values()))
        names = list(dict.fromkeys(image.name for image in self.promotion.images))
        work = {name: [i for i in self.promotion.images if i.name == name] for name in names}

        def one(name: str) -> None:
            for image in work[name]:
                self.image(image)

        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="imgctl-promote") as pool:
            list(pool.map(one, names))
        result.interrupted = self.cancelled.is_set()
        result.floating = self.floating(result)
        result.retries = self.policy.used
        return result


class _TagFailed(Exception):
    pass


def _message(exc: BaseException) -> str:
    if isinstance(exc, ImgctlError):
        text = exc.message
        if isinstance(exc, AuthFailed) and exc.hint:
            text += f" ({exc.hint})"
        return text
    return str(exc) if isinstance(exc, _TagFailed) else f"{type(exc).__name__}: {exc}"


def promote(
    plan_from: Plan, plan_to: Plan, emit: Emit, *, from_registry: str | None = None, to_registry: tuple[str, ...] = (),
    policy: RetryPolicy | None = None, environ: dict[str, str] | None = None, cancelled: threading.Event | None = None,
    insecure: Callable[[], frozenset[str]] | None = None, jobs: int = IMAGES_AT_ONCE,
) -> ReleaseResult:
    """Promote version `plan_from.version` to `plan_to.version` (two plans of one config); see
    the module's docstring. Raises SourceMissing (exit 1), naming every image whose source is
    not in its registry, before anything moves; UsageError for registries or tags that do not
    fit. `insecure` says which registries not on loopback speak plain HTTP (the engine's list)."""
    promotion = plan_promotion(plan_from, plan_to, from_registry=from_registry, to_registry=to_registry)
    promoter = _Promoter(promotion, emit, policy or RetryPolicy(), environ, cancelled or threading.Event(),
                         insecure, jobs)
    for name in promotion.skipped:
        promoter.emit(Warning(image=name, message=f"{name} has no tag in the destination registries: not promoted"))
    return promoter.run()


__all__ = ["promote", "plan_promotion", "promotion_text", "Promotion", "ImagePromotion",
           "SourceMissing", "SourceResolved", "BlobCopied"]
