"""The table printed at the end of a release: image, tags, digest, result."""

from __future__ import annotations

from typing import Any

from imgctl.plan import Plan
from imgctl.units import human_bytes
from imgctl.run import ReleaseResult

REPORT_SCHEMA = "imgctl.report/v1"


def report_dict(result: ReleaseResult, plan: Plan) -> dict[str, Any]:
    """The `--report` document: exactly what was pushed, per image, registry and tag."""
    return {
        "schema": REPORT_SCHEMA,
        "ok": result.ok,
        "exit_code": result.exit_code,
        "interrupted": result.interrupted,
        "version": plan.version,
        "nightly": plan.options.nightly,
        "floating": result.floating,
        "retries": result.retries,
        "images": summary_rows(result),
    }


def summary_rows(result: ReleaseResult) -> list[dict[str, Any]]:
    rows = []
    for image in result.images:
        digests = sorted({t.digest for t in image.tags if t.digest})
        rows.append(
            {
                "image": image.name,
                "result": image.status,
                "digest": digests[0] if len(digests) == 1 else ", ".join(digests) or "-",
                "size": human_bytes(image.size) if image.size else "-",
                "seconds": round(image.seconds, 1),
                "tags": [
                    {"reference": t.reference, "status": t.status, "digest": t.digest, "verified": t.verified,
                     "floating": t.floating, "registry": t.target, "error": t.error}
                    for t in image.tags
                ],
                "error": image.error,
            }
        )
    return rows


def summary_text(result: ReleaseResult) -> str:
    lines = []
    for row in summary_rows(result):
        lines.append(f"{row['image']}: {row['result'].upper()}  digest {row['digest']}  size {row['size']}  {row['seconds']}s")
        for tag in row["tags"]:
            mark = {"pushed": "ok", "unchanged": "unchanged", "built": "built", "held": "held back", "failed": "FAILED",
                    "pending": "not pushed"}.get(tag["status"], tag["status"])
            lines.append(f"    {tag['reference']}  [{mark}]")
        if row["error"] and row["result"] in ("failed", "skipped"):
            lines.append(f"    reason: {row['error']}")
    if result.floating.startswith("held back"):
        lines.append(f"Floating tags (latest, ...) {result.floating}; they still point where they did.")
    if result.retries:
        lines.append(f"Retries used: {result.retries}")
    done = sum(1 for i in result.images if i.status in ("released", "built"))
    verdict = "interrupted" if result.interrupted else ("succeeded" if result.ok else "FAILED")
    lines.append(f"Release {verdict}: {done}/{len(result.images)} images done.")
    return "\n".join(lines)
