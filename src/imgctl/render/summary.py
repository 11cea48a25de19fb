"""The table printed at the end of a release, the JSON summary rows and the `--report` document."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgctl.auth import redact
from imgctl.plan import Plan
from imgctl.render.logs import log_path
from imgctl.units import human_bytes
from imgctl.results import DONE, ImageResult, ReleaseResult

if TYPE_CHECKING:
    from rich.console import Console

REPORT_SCHEMA = "imgctl.report/v1"
HEADER = ("IMAGE", "TAGS", "DIGEST", "SIZE", "LAYERS", "TIME", "RESULT")
TAG_MARK = {"pushed": "ok", "unchanged": "unchanged", "built": "built", "held": "held back", "failed": "FAILED",
            "pending": "not pushed"}
FAILURE_LINES = 10  # of the failing step's output, shown again under the table


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
                "stored_size": human_bytes(image.stored_size) if image.stored_size else "-",
                "previous_size": human_bytes(image.previous_size) if image.previous_size else "-",
                "layers": image.layers,
                "seconds": round(image.seconds, 1),
                "tags": [
                    {"reference": t.reference, "status": t.status, "digest": t.digest, "verified": t.verified,
                     "floating": t.floating, "registry": t.target, "error": t.error}
                    for t in image.tags
                ],
                "error": image.error,
                "platforms": platform_rows(image),
            }
        )
    return rows


def platform_rows(image: ImageResult) -> list[dict[str, Any]]:
    """A multi-platform image's platforms: each one's image, its digest (a child of the index) and size."""
    return [{"platform": p.platform, "image_id": p.image_id, "digest": p.digest, "size": p.size} for p in image.platforms]


def size_text(image: ImageResult) -> str:
    """`2.0MB`, or with the change since the previous release when known: `2.0MB (+300.0kB)`.

    The size is the engine's (uncompressed); the change compares what the registry stores
    (compressed) for the same tag before and after, the only like-for-like figures there are.
    """
    if not image.size:
        return "-"
    if not image.previous_size or not image.stored_size:
        return human_bytes(image.size)
    change = image.stored_size - image.previous_size
    return f"{human_bytes(image.size)} ({'-' if change < 0 else '+'}{human_bytes(abs(change))})"


def _cells(image: ImageResult, *, short_tags: bool = False) -> list[list[str]]:
    """One table row; a cell may hold several lines (one per tag, one per digest).

    With `short_tags` a tag is shown by its tag alone when the image goes to one repository, so
    the table fits a terminal.
    """
    one_repository = len({t.reference.rsplit(":", 1)[0] for t in image.tags}) == 1
    tags = [
        f"{t.reference.rsplit(':', 1)[1] if short_tags and one_repository else t.reference}  [{TAG_MARK.get(t.status, t.status)}]"
        for t in image.tags
    ]
    return [
        [image.name],
        tags or ["-"],
        sorted({t.digest for t in image.tags if t.digest}) or ["-"],
        [size_text(image)],
        [str(image.layers) if image.layers is not None else "-"],
        [f"{image.seconds:.1f}s" if image.seconds else "-"],
        [image.status.upper()],
    ]


def _widths(rows: list[list[list[str]]]) -> list[int]:
    return [max(len(line) for row in [[[h] for h in HEADER], *rows] for line in row[c]) for c in range(len(HEADER))]


def _table(result: ReleaseResult) -> list[str]:
    rows = [_cells(image) for image in result.images]
    widths = _widths(rows)
    lines = []
    for row in [[[h] for h in HEADER], *rows]:
        for n in range(max(len(cell) for cell in row)):
            lines.append("  ".join((cell[n] if n < len(cell) else "").ljust(w) for cell, w in zip(row, widths)).rstrip())
    return lines


def _after_table(result: ReleaseResult, log_dir: Path | None) -> list[str]:
    """Why images failed (with their last output lines), held tags, retries, the logs, the verdict."""
    lines = []
    for image in result.images:
        if image.status == "failed":
            lines.append(f"{image.name} FAILED ({image.stage or '?'}): {image.error or 'no reason given'}")
            lines.extend(f"    {line}" for line in image.output[-FAILURE_LINES:])
            if log_dir is not None:
                lines.append(f"    full log: {log_path(log_dir, image.name)}")
        elif image.error and image.status in ("skipped", "interrupted", "deferred"):
            lines.append(f"{image.name} {image.status}: {image.error}")
        if image.platforms and image.status == "released":
            lines.append(f"{image.name}: " + ", ".join(
                f"{p.platform} {p.digest or '-'}" + (f" ({human_bytes(p.size)})" if p.size else "") for p in image.platforms
            ))
    if result.floating.startswith("held back"):
        lines.append(f"Floating tags (latest, ...) {result.floating}; they still point where they did.")
    if result.retries:
        lines.append(f"Retries used: {result.retries}")
    if log_dir is not None:
        lines.append(f"Build logs: {log_dir}")
    done = sum(1 for i in result.images if i.status in DONE)
    verdict = "interrupted" if result.interrupted else ("succeeded" if result.ok else "FAILED")
    lines.append(f"Release {verdict}: {done}/{len(result.images)} images done.")
    return lines


def summary_text(result: ReleaseResult, *, log_dir: Path | None = None) -> str:
    """Plain, aligned text: for logs and pipes."""
    return redact("\n".join(_table(result) + _after_table(result, log_dir)))


def print_summary(result: ReleaseResult, console: Console, *, log_dir: Path | None = None) -> None:
    """The same summary as a rich table, for a terminal."""
    from rich.table import Table
    from rich.text import Text

    rows = [_cells(image, short_tags=True) for image in result.images]
    widths = _widths(rows)
    digest = HEADER.index("DIGEST")
    # Every other column keeps its width; on a narrow terminal only the digest is cut short (the
    # report and the JSON output hold it whole).
    room = console.width - sum(widths) + widths[digest] - 2 * (len(HEADER) - 1)
    widths[digest] = min(widths[digest], max(12, room))
    table = Table(box=None, header_style="bold", padding=(0, 2, 0, 0), pad_edge=False)
    for name, width in zip(HEADER, widths):
        table.add_column(name, width=width, no_wrap=True, overflow="ellipsis")
    colour = {"released": "green", "built": "green", "failed": "red", "interrupted": "yellow"}
    for image, row in zip(result.images, rows):
        *cells, status = ("\n".join(cell) for cell in row)
        table.add_row(*(Text(redact(cell)) for cell in cells), Text(status, style=colour.get(image.status, "dim")))
    console.print(table)
    *notes, verdict = _after_table(result, log_dir)
    for note in notes:
        console.print(Text(redact(note)))
    console.print(Text(verdict, style="bold green" if result.ok else "bold red"))
