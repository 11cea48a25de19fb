"""Putting a built image's tags in the registry, each confirmed there: a push through the engine
for the first tag of a repository, a manifest PUT for every other, floating tags last.

Floating tags (`latest`, `1.2`, ...) move only after every image of the run has succeeded, so a
failed, partial or interrupted release never moves them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol, TYPE_CHECKING, TypeVar
from concurrent.futures import ThreadPoolExecutor

from imgctl.errors import AuthFailed, ImgctlError, VerifyFailed
from imgctl.events import Event, FloatingHeld, TagAdded, Unchanged, Verified
from imgctl.plan import Plan, PlannedImage, PlannedTag
from imgctl.registries import Registries
from imgctl.registry import RegistryClient
from imgctl.results import ImageResult, ReleaseResult, count_failures
from imgctl.retry import RetryPolicy, call_with_retries
from imgctl.transport import POOL_SIZE
from imgctl.retry_report import reporter

if TYPE_CHECKING:  # for annotations: promote imports docker-py only to read the engine's insecure registries
    from imgctl.engine import Engine

FLOATING_AT_ONCE = POOL_SIZE  # repositories whose floating tags are set at once (a connection each), once every image is released


class Publisher:
    def __init__(
        self, engine: Engine, registries: Registries, policy: RetryPolicy, emit: Callable[[Event], None], *,
        results: dict[str, ImageResult], in_registry: dict[tuple[str, str, str], str], cancelled: threading.Event,
    ) -> None:
        self.engine = engine
        self.registries = registries
        self.policy = policy
        self.emit = emit
        self.results = results
        # (image, registry, repository) -> the digest of the image there: --skip-unchanged found it,
        # or it is a multi-platform image's index
        self.in_registry = in_registry
        self.cancelled = cancelled

    def push_tag(self, image: PlannedImage, tag: PlannedTag) -> bool:
        """Push one tag (retrying transient faults), then confirm its digest with the registry."""
        result = self.results[image.name]
        tag_result = result.tag(tag.reference)
        creds = self.registries.creds(tag.target)
        registry = self.registries.client(tag)
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
                    on_retry=reporter(self.emit, image.name, f"tag {tag.reference}"),
                    cancelled=self.cancelled.is_set, registry=tag.host,
                )
                digest = reuse
                self.emit(TagAdded(image=image.name, reference=tag.reference, digest=digest))
            else:
                digest, _size = call_with_retries(
                    lambda: self.engine.push(image.name, tag, creds, self.emit),
                    policy=self.policy,
                    on_retry=reporter(self.emit, image.name, f"push {tag.reference}"),
                    cancelled=self.cancelled.is_set, registry=tag.host,
                )
            tag_result.digest = digest
            found = call_with_retries(
                lambda: registry.manifest_digest(tag.api_path, tag.tag),
                policy=self.policy,
                on_retry=reporter(self.emit, image.name, f"verify {tag.reference}"),
                cancelled=self.cancelled.is_set, registry=tag.host,
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

    def stored_size(self, tag: PlannedTag, digest: str | None = None, *, recent: bool = False) -> int | None:
        """What the registry stores for the tag, or for `digest` (known: its manifest may be kept
        already); `recent` takes what --skip-unchanged just read of the tag (a size to report)."""
        try:
            return self.registries.client(tag).stored_size(tag.api_path, digest or tag.tag, recent=recent)
        except ImgctlError:
            return None  # a size is a nicety: never fail a release over it

    def _in_repository(self, image: PlannedImage, tag: PlannedTag) -> str | None:
        """The manifest digest of this image already in the tag's repository, if any.

        Either --skip-unchanged found it there, it is the index of a multi-platform image, or another
        tag of the image was pushed and verified
        there this run. A tag then costs one manifest PUT, not a push through the engine (which
        would check every layer again).
        """
        known = self.in_registry.get((image.name, tag.target, tag.api_path))
        if known:
            return known
        result = self.results[image.name]
        for other in image.tags:
            if other.target == tag.target and other.api_path == tag.api_path and other.tag != tag.tag:
                done = result.tag(other.reference)
                if done.verified and done.digest:
                    return done.digest
        return None

    def _current_digest(self, registry: RegistryClient, image: str, tag: PlannedTag) -> str | None:
        """What the tag points at now; None if unknown. The push itself reports refusals best."""
        try:
            return call_with_retries(
                lambda: registry.manifest_digest(tag.api_path, tag.tag),
                policy=self.policy,
                on_retry=reporter(self.emit, image, f"check {tag.reference}"),
                cancelled=self.cancelled.is_set, registry=tag.host,
            )
        except AuthFailed:
            return None

    # -- floating tags, last -------------------------------------------------------------

    def finish_floating(self, plan: Plan, result: ReleaseResult, fail: Callable[[str, str, str], bool]) -> str:
        """Move the floating tags if every image succeeded; else hold them all. Returns how it went."""
        floating = [(image, tag) for image in plan.images for tag in image.floating_tags]
        held = [t.reference for image in plan.images for t in image.held_back]
        if held and plan.held_back_reason:
            self.emit(FloatingHeld(reason=plan.held_back_reason, references=tuple(held)))
        if not floating:
            return f"held back: {plan.held_back_reason}" if held else "none"
        if not plan.options.push:
            return "not pushed (--no-push)"
        if plan.options.stage == "platform-job":
            return "not moved: a platform job (--merge moves every tag)"
        pushed = move_floating(floating, result, self.results, self.emit, self.push_tag, what="release")
        if isinstance(pushed, str):
            return pushed
        for image in plan.images:
            errors = [
                self.results[image.name].tag(tag.reference).error or f"push of {tag.reference} failed"
                for owner, tag in floating if owner is image and not pushed[tag.reference]
            ]
            if errors:
                fail(image.name, "push", "; ".join(dict.fromkeys(errors)))
        return "pushed" if result.ok else "partly pushed"


Named = TypeVar("Named", bound="HasName")


class HasName(Protocol):
    name: str


def move_floating(
    floating: Sequence[tuple[Named, PlannedTag]], result: ReleaseResult, results: dict[str, ImageResult],
    emit: Callable[[Event], None], put: Callable[[Named, PlannedTag], bool], *, what: str,
) -> dict[str, bool] | str:
    """Floating tags, last: all held if the run was interrupted or an image failed (returns why);
    else each set with `put` (returns each reference's outcome).

    Each is a few small requests (the image is in the repository by now: usually a manifest
    PUT, no layers), so repositories are served at once: this phase is the run's tail. Within
    one repository they go one after another: docker-registry's filesystem storage rewrites the
    manifest's revision link on each tag PUT, and a read of it racing that write gets a 500
    ("invalid checksum digest format"), which costs a retry.
    """
    failed = [i for i in result.images if i.status != "released"]
    if result.interrupted or failed:
        why = f"{what} interrupted" if result.interrupted else count_failures(failed)
        for image, tag in floating:
            results[image.name].tag(tag.reference).status = "held"
        emit(FloatingHeld(reason=why, references=tuple(t.reference for _, t in floating)))
        return f"held back: {why}"
    by_repository: dict[str, list[tuple[Named, PlannedTag]]] = {}
    for image, tag in floating:
        by_repository.setdefault(tag.repository, []).append((image, tag))
    with ThreadPoolExecutor(max_workers=FLOATING_AT_ONCE, thread_name_prefix="imgctl-floating") as pool:
        outcomes = pool.map(lambda tasks: [put(*task) for task in tasks], by_repository.values())
        return {tag.reference: ok for tasks, oks in zip(by_repository.values(), outcomes) for (_, tag), ok in zip(tasks, oks)}

