"""`imgctl plan`: the resolved release as a table, or as one JSON document (schema imgctl.plan/v1)."""

from __future__ import annotations

from typing import Any

from imgctl.plan import Plan, PlannedTag

PLAN_SCHEMA = "imgctl.plan/v1"


def _tag(tag: PlannedTag) -> dict[str, Any]:
    return {"reference": tag.reference, "registry": tag.target, "tag": tag.tag, "floating": tag.floating}


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    options = plan.options
    return {
        "schema": PLAN_SCHEMA,
        "config": str(plan.config_path) if plan.config_path else None,
        "version": plan.version,
        "version_source": plan.version_source,
        "prerelease": plan.prerelease,
        "nightly": options.nightly,
        "push": options.push,
        "no_cache": options.no_cache,
        "pull": options.pull,
        "held_back_reason": plan.held_back_reason,
        "facts": plan.facts,
        "levels": plan.levels(),
        "images": [
            {
                "name": image.name,
                "context": str(image.context),
                "dockerfile": image.dockerfile,
                "target": image.target,
                "depends_on": list(image.depends_on),
                "inferred_from": list(image.inferred_from),
                "build_args": image.build_args,
                "labels": image.labels,
                "tags": [_tag(t) for t in image.tags],
                "held_back": [_tag(t) for t in image.held_back],
                "platforms": [str(p) for p in image.platforms],
                "secrets": [s.id for s in image.secrets],  # ids only: where a value is, never the value
                "ssh": [a.id for a in image.ssh],
                "cache_from": list(image.cache_from),
                "inline_cache": image.inline_cache,
            }
            for image in plan.images
        ],
    }


def plan_text(plan: Plan) -> str:
    head = f"version {plan.version} ({plan.version_source})" if plan.version else "no version"
    mode = " nightly" if plan.options.nightly else ""
    lines = [f"Release plan{mode}: {len(plan.images)} images, {head}"]
    if plan.held_back_reason:
        lines.append(f"Floating tags held back: {plan.held_back_reason}")
    for number, image in enumerate(plan.images, 1):
        deps = f"  after {', '.join(image.depends_on)}" if image.depends_on else ""
        lines.append(f"{number}. {image.name}{deps}")
        lines.append(f"   context {image.context}  dockerfile {image.dockerfile}" + (f"  target {image.target}" if image.target else ""))
        if image.platforms:
            lines.append(f"   platforms {', '.join(map(str, image.platforms))} (an image index)")
        if image.secrets or image.ssh:
            lines.append("   " + "  ".join([*(f"secret {s.id}" for s in image.secrets), *(f"ssh {a.id}" for a in image.ssh)]))
        for ref in image.cache_from:
            lines.append(f"   cache from {ref}")
        for key, value in image.build_args.items():
            lines.append(f"   arg {key}={value}")
        for tag in image.tags:
            lines.append(f"   {'floating ' if tag.floating else 'immutable'} {tag.reference}")
        for tag in image.held_back:
            lines.append(f"   held back {tag.reference}")
    return "\n".join(lines)


def plan_matrix(plan: Plan, by: str = "group") -> dict[str, Any]:
    """`{"include": [{"group": ..., "images": ..., "only": ...}]}` for `strategy.matrix` in a workflow.

    By group, each entry is a connected part of the dependency graph, so runners never wait on
    each other; `only` is ready to paste after `imgctl release`. By platform, one entry per
    platform of the multi-platform images (`flags` to paste: `--platform P --platform-job`), to
    run each on a runner of that architecture; a later job runs `imgctl release --merge`.
    """
    if by == "platform":
        platforms = dict.fromkeys(str(p) for image in plan.images for p in image.platforms)
        return {
            "include": [
                {"platform": p, "images": " ".join(i.name for i in plan.images if p in map(str, i.platforms)),
                 "flags": f"--platform {p} --platform-job"}
                for p in platforms
            ]
        }
    return {
        "include": [
            {"group": group[0], "images": " ".join(group), "only": " ".join(f"--only {name}" for name in group)}
            for group in plan.groups()
        ]
    }
