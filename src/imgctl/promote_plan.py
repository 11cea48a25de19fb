"""What `imgctl promote` moves where, worked out before anything moves (pure).

Two plans of the same config, one per version, say what moves: each image's source is its first
immutable tag of the source version (the first that names that version, e.g. `{version}` as
`1.4.0-rc.2`), and its destinations are every tag the target version's plan gives it: within one
registry (the default), or from one registry to others (`from_registry`, `to_registry`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from imgctl.errors import UsageError
from imgctl.plan import Plan
from imgctl.plan_tags import PlannedTag, TagKinds, Target


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
