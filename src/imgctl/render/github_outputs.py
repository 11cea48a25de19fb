"""What a release leaves for the rest of the GitHub Actions job: step outputs in $GITHUB_OUTPUT
and a table in $GITHUB_STEP_SUMMARY.

Output names
------------
`<name>-digest` per image: step output names may hold only letters, digits, `-` and `_`, so every
other character of the image name (`/` and `.`) becomes `_`: image `team/web.app` gives output
`team_web_app-digest`. Names that start with a digit need the index syntax:
`steps.release.outputs['1app-digest']`. If two images map to the same key, neither is written
(read the `digests` map instead).
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from imgctl.auth import redact
from imgctl.results import DONE
from imgctl.units import human_bytes

if TYPE_CHECKING:
    from imgctl.results import ReleaseResult

# Tag statuses whose reference the registry holds, confirmed, after the release: "unchanged" is a
# re-run that found this very image already there under that tag (nothing needed pushing).
IN_REGISTRY = ("pushed", "unchanged")


def output_key(name: str) -> str:
    """A step output name for an image: characters other than letters, digits, - and _ become _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _pushed(result: ReleaseResult) -> list[tuple[str, str, str]]:
    """(image, reference, digest) of every tag pushed and confirmed (or found already there)."""
    return [
        (image.name, tag.reference, tag.digest)
        for image in result.images for tag in image.tags
        if tag.status in IN_REGISTRY and tag.digest
    ]


def release_outputs(result: ReleaseResult) -> dict[str, str]:
    """The step outputs: `digests`, `tags` and `<name>-digest` per image with a pushed tag, and
    `platforms` (image -> platform -> its digest and size) for multi-platform images.

    "Pushed" includes tags a re-run found unchanged in the registry: they name the same digest.
    Tags only built, held back, failed or never reached are left out.
    """
    pushed = _pushed(result)
    outputs = {
        "digests": json.dumps({ref: digest for _, ref, digest in pushed}, sort_keys=True),
        "tags": json.dumps([ref for _, ref, _ in pushed]),
    }
    platforms = {
        image.name: {p.platform: {"digest": p.digest, "size": p.size} for p in image.platforms}
        for image in result.images if image.platforms and image.status == "released"
    }
    if platforms:
        outputs["platforms"] = json.dumps(platforms, sort_keys=True)
    keys: dict[str, list[str]] = {}
    for image in result.images:
        keys.setdefault(output_key(image.name) + "-digest", []).append(image.name)
    for key, names in keys.items():
        if len(names) != 1 or key in outputs:
            continue  # two images map to one key: neither is written
        digests = sorted({digest for name, _, digest in pushed if name == names[0]})
        if digests:
            # one digest in practice; should registries ever disagree, every one, space-separated
            outputs[key] = " ".join(digests)
    return outputs


def _append_outputs(path: str, outputs: Mapping[str, str]) -> None:
    with open(path, "a", encoding="utf-8") as file:
        for key, value in outputs.items():
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            while delimiter in value or delimiter in key:
                delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            file.write(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else _cell(text)


_TAG_MARK = {
    "pushed": "pushed", "unchanged": "unchanged, already there", "built": "built, not pushed", "held": "held back",
    "failed": "FAILED", "pending": "not pushed",
}


def step_summary(result: ReleaseResult) -> str:
    """Markdown for the job summary: one table row per image, then held-back floating tags."""
    done = sum(1 for i in result.images if i.status in DONE)
    verdict = "interrupted" if result.interrupted else ("succeeded" if result.ok else "failed")
    lines = [
        f"### imgctl release {verdict}: {done}/{len(result.images)} images done",
        "",
        "| Image | Tags | Digest | Size | Result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for image in result.images:
        tags = "<br>".join(f"{_code(t.reference)} ({_TAG_MARK.get(t.status, t.status)})" for t in image.tags) or "-"
        digests = sorted({t.digest for t in image.tags if t.digest and t.status in IN_REGISTRY})
        digest = "<br>".join(_code(d) for d in digests) or "-"
        size = human_bytes(image.size) if image.size else "-"
        outcome = image.status
        if image.status == "failed":
            outcome = f"**failed** ({image.stage or '?'}): {image.error or ''}"
        elif image.status in ("skipped", "interrupted") and image.error:
            outcome = f"{image.status}: {image.error}"
        outcome = redact(outcome if len(outcome) <= 300 else outcome[:297] + "...")
        lines.append(f"| {_cell(image.name)} | {tags} | {digest} | {size} | {_cell(outcome)} |")
    lines.append("")
    if result.floating.startswith("held back"):
        held = [t.reference for i in result.images for t in i.tags if t.status == "held"]
        refs = ", ".join(_code(r) for r in held) or "-"
        reason = result.floating.removeprefix("held back").lstrip(": ")
        lines.append(f"Floating tags held back ({_cell(reason)}), still pointing where they did: {refs}")
        lines.append("")
    if result.retries:
        lines.append(f"Retries used: {result.retries}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_outputs(result: ReleaseResult, environ: Mapping[str, str]) -> dict[str, str]:
    """Append the step outputs to $GITHUB_OUTPUT and the summary to $GITHUB_STEP_SUMMARY.

    Each is written only if its variable is set (the runner sets both). Values use the
    multi-line-safe `name<<DELIMITER` form with a random delimiter. Returns the outputs.
    """
    outputs = release_outputs(result)
    if environ.get("GITHUB_OUTPUT"):
        _append_outputs(environ["GITHUB_OUTPUT"], outputs)
    if environ.get("GITHUB_STEP_SUMMARY"):
        with open(environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as file:
            file.write(step_summary(result))
    return outputs
