"""`imgctl promote`: point a version's tags at what an earlier release already holds, with no build.

What moves where is promote_plan.py's (two plans of the config, one per version); connecting to
the registries and reading the sources, before anything moves, promote_registries.py's; this
module moves it. Within one registry (the default) a tag is one manifest PUT of the manifest read
from the source; from one registry to another (`from_registry`, `to_registry`) the manifest is
first copied whole into each destination repository (manifestcopy.py and blobcopy.py: blobs
mounted within a registry, streamed otherwise, side by side; an index's children before it), and
only then do tags move: its immutable tag's PUT stores it (a repository that gets floating tags
only has it stored by its digest first).

What a release guarantees holds here too: every source is found before anything moves (a missing
one fails the promotion, naming it); immutable tags move image by image as each is copied;
floating tags only once every image succeeded, else none; every tag is read back and must hold
the source's digest. The result is a ReleaseResult, so the summary, --report and GitHub outputs
render it as they render a release.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from imgctl.blobcopy import BlobMoved, KnownBlobs, Repo
from imgctl.manifestcopy import copy_manifest
from imgctl.errors import AuthFailed, ImgctlError, VerifyFailed
from imgctl.events import (
    BlobCopied, Event, FloatingHeld, ImageDone, ImageFailed, ImageStarted, SourceResolved, TagAdded, Unchanged, Verified,
    Warning,
)
from imgctl.indexes import platform_digests
from imgctl.plan import Plan
from imgctl.plan_tags import PlannedTag
from imgctl.promote_plan import ImagePromotion, Promotion, plan_promotion
from imgctl.promote_registries import PromotionRegistries, SourceMissing
from imgctl.publish import move_floating
from imgctl.registry import Manifest
from imgctl.results import ImageResult, PlatformResult, ReleaseResult, TagResult
from imgctl.retry import RetryPolicy
from imgctl.transport import POOL_SIZE

Emit = Callable[[Event], None]
IMAGES_AT_ONCE = POOL_SIZE  # images promoted at once (a connection each); within one repository, requests go one after another
BLOBS_AT_ONCE = 4  # an image's blobs copied side by side when few images share the connections


class _Promoter:
    """Carries out a promotion whose registries are connected: each image copied and its tags moved,
    then the floating tags, last."""

    def __init__(
        self, promotion: Promotion, registries: PromotionRegistries, emit: Emit, policy: RetryPolicy,
        cancelled: threading.Event, jobs: int,
    ) -> None:
        self.promotion = promotion
        self.registries = registries
        self.emit = emit
        self.policy = policy
        self.cancelled = cancelled
        self.jobs = max(1, jobs)
        self.known = KnownBlobs()
        # Side by side only as far as the connection pools go: a registry's connections are
        # shared by every image in flight, and one past the pool is opened and thrown away.
        in_flight = min(self.jobs, len({image.name for image in promotion.images}) or 1)
        self.blobs_at_once = max(1, min(BLOBS_AT_ONCE, POOL_SIZE // in_flight))
        self.sources: dict[tuple[str, PlannedTag], Manifest] = {}
        self.results: dict[str, ImageResult] = {}
        for image in promotion.images:
            result = self.results.setdefault(image.name, ImageResult(image.name))
            result.tags += [TagResult(t.reference, t.target, t.floating) for t in image.tags]
            result.tags += [TagResult(t.reference, t.target, t.floating, status="held") for t in image.held_back]

    # -- one image ---------------------------------------------------------------------------

    def image(self, image: ImagePromotion) -> None:
        result = self.results[image.name]
        started = time.monotonic()
        manifest = self.sources[image.name, image.source]
        if self.cancelled.is_set():
            if result.status == "pending":
                result.status, result.error = "skipped", "promotion interrupted"
            return
        self.emit(ImageStarted(image=image.name, action="promote"))
        self.emit(SourceResolved(image=image.name, reference=image.source.reference, digest=manifest.digest,
                                 media_type=manifest.media_type))
        source = Repo(self.registries.client(image.source.target), image.source.api_path)
        try:
            by_repository: dict[tuple[str, str], list[PlannedTag]] = {}
            for tag in image.tags + image.held_back:
                by_repository.setdefault((tag.target, tag.api_path), [])
                if not tag.floating:
                    by_repository[tag.target, tag.api_path].append(tag)
            for (target, path), tags in by_repository.items():
                destination = Repo(self.registries.client(target), path)
                repository = f"{destination.where}"

                def moved(blob: BlobMoved, repository: str = repository) -> None:
                    self.emit(BlobCopied(image=image.name, reference=repository, digest=blob.digest, size=blob.size,
                                         how=blob.how))

                copy_manifest(source, destination, manifest, known=self.known,
                              retrying=self.registries.retrying(image.name, destination.client.host), on_blob=moved,
                              blobs_at_once=self.blobs_at_once, store=not tags)
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
        client = self.registries.client(tag.target)
        run = self.registries.retrying(image, tag.host)
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
        self.registries.connect()
        self.sources = self.registries.resolve()
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


def _one_at_a_time(emit: Emit) -> Emit:
    """`emit` for the promotion's threads: one event at a time, as the renderers expect."""
    lock = threading.Lock()

    def emit_locked(event: Event) -> None:
        with lock:
            emit(event)

    return emit_locked


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
    emit = _one_at_a_time(emit)
    policy = policy or RetryPolicy()
    cancelled = cancelled or threading.Event()
    registries = PromotionRegistries(promotion, emit, policy, environ, cancelled, insecure)
    promoter = _Promoter(promotion, registries, emit, policy, cancelled, jobs)
    for name in promotion.skipped:
        promoter.emit(Warning(image=name, message=f"{name} has no tag in the destination registries: not promoted"))
    return promoter.run()


__all__ = ["promote", "plan_promotion", "Promotion", "ImagePromotion", "SourceMissing", "SourceResolved", "BlobCopied"]
