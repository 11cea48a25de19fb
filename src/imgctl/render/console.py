"""The terminal view: one live line per image, with the history printed above it.

Everything that matters after the run (failures, retries, warnings, held floating tags, each image's
outcome) is printed with `console.print`, so it stays in the scrollback; the live area is transient.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from imgctl import events as ev
from imgctl.auth import redact
from imgctl.units import human_bytes

ACTIVE = ("building", "promoting", "pushing")
MAX_LAYERS = 3
MARKS = {"queued": ("·", "dim"), "done": ("✓", "green"), "failed": ("✗", "red"), "skipped": ("–", "dim")}
# Build output may carry colour codes or cursor movement, which would tear the live area apart.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str) -> str:
    return redact(_CONTROL.sub("", text.replace("\t", "    ")))


def line(text: str = "", style: str = "") -> Text:
    """One line of the live area: never wraps, so the line count is exact."""
    return Text(clean(text).replace("\n", " "), style=style, no_wrap=True, overflow="ellipsis")


def history(*parts: str | tuple[str, str]) -> Text:
    """A line for the scrollback: every part cleaned before styling, so no secret survives in a span."""
    return Text.assemble(*((clean(p), "") if isinstance(p, str) else (clean(p[0]), p[1]) for p in parts))


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def short_digest(digest: str) -> str:
    return digest if len(digest) <= 19 else digest[:19] + "…"


@dataclass
class _Layer:
    status: str
    current: int | None = None
    total: int | None = None
    first: tuple[float, int] | None = None  # when and at how many bytes progress was first seen: the rate
    rate: float = 0.0


@dataclass
class _Row:
    name: str
    tail: deque[str]
    state: str = "queued"
    started: float | None = None
    ended: float | None = None
    detail: str = ""
    image_id: str = ""
    layers: dict[str, _Layer] = field(default_factory=dict)
    layers_done: int = 0


class ConsoleRenderer:
    def __init__(self, console: Console, *, verbosity: int = 0, tail_lines: int = 3, images: Iterable[str] = ()) -> None:
        self.console = console
        self.verbosity = verbosity
        self.tail_lines = tail_lines
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()  # the Live refresh thread reads the rows while events change them
        self._spinner = Spinner("dots", style="cyan")
        self._live: Live | None = None
        for name in images:
            self._row(name)

    def start(self) -> None:
        if self.verbosity >= 0 and self._live is None:
            self._live = Live(self, console=self.console, refresh_per_second=8, transient=True, redirect_stdout=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        with self._lock:
            cut = [r for r in self._rows.values() if r.state in ACTIVE]
        for row in cut:  # interrupted: say where each image was, since the live area is gone
            self.console.print(history(("■ ", "yellow"), (row.name, "bold"), f" stopped while {row.state}: {row.detail}"))

    def __enter__(self) -> ConsoleRenderer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            lines = self._update(event)
        for text in lines:  # outside the lock: printing makes Live render, which takes the lock
            self.console.print(text, highlight=False)

    def _row(self, name: str) -> _Row:
        if name not in self._rows:
            self._rows[name] = _Row(name, deque(maxlen=max(self.tail_lines, 0) or 1))
        return self._rows[name]

    def _update(self, event: ev.Event) -> list[Text]:  # noqa: C901, PLR0912 - one branch per event type
        out: list[Text] = []
        quiet = self.verbosity < 0
        row = self._row(event.image) if event.image else None
        name = event.image or ""
        if isinstance(event, ev.Retrying):
            wait = f" in {event.wait:.1f}s" if event.wait else ""
            who = f"{name}: " if name else ""
            out.append(history((f"↻ {who}retry {event.attempt}/{event.attempts - 1} of {event.action}{wait}: {event.reason}", "yellow")))
        elif isinstance(event, ev.Warning):
            out.append(history((f"! warning: {event.message}", "yellow")))
        elif isinstance(event, ev.FloatingHeld) and not quiet:
            out.append(history((f"! floating tags held back ({event.reason}): {', '.join(event.references)}", "yellow")))
        elif isinstance(event, ev.LoggedIn) and not quiet:
            out.append(history((f"  logged in to {event.registry} as {event.username} ({event.source})", "dim")))
        if row is None:
            return out
        if isinstance(event, ev.ImageStarted) and event.action == "promote":
            row.state, row.started = "promoting", row.started or event.time
        elif isinstance(event, (ev.ImageStarted, ev.BuildStep)):
            row.state, row.started = "building", row.started or event.time
            if isinstance(event, ev.BuildStep):
                on = f"{event.platform} " if event.platform else ""
                row.detail = f"{on}Step {event.step}/{event.total}: {event.instruction}"
                row.tail.clear()  # the tail belongs to the current step
        elif isinstance(event, ev.BuildOutput):
            if event.line.strip() and (not event.internal or self.verbosity > 0) and self.tail_lines > 0:
                row.tail.append(event.line)
        elif isinstance(event, ev.BuildDone):
            row.image_id, row.detail = event.image_id, f"built {short_digest(event.image_id)} in {duration(event.seconds)}"
            row.tail.clear()
        elif isinstance(event, ev.PushStarted):
            row.state, row.detail, row.layers, row.layers_done = "pushing", event.reference, {}, 0
            row.started = row.started or event.time
        elif isinstance(event, ev.LayerProgress):
            self._layer(row, event)
        elif isinstance(event, (ev.PushDone, ev.TagAdded)):
            row.layers = {}
            if row.ended is not None:  # a floating tag, pushed after the image was done
                row.state = "done"
                if not quiet:
                    what = "pushed" if isinstance(event, ev.PushDone) else "tagged"
                    out.append(history(("✓ ", "green"), (name, "bold"), f" {what} {event.reference} {short_digest(event.digest)}"))
        elif isinstance(event, ev.ImageDone):
            row.state, row.ended, row.layers = "done", event.time, {}
            count = len(event.digests)
            digests = ", ".join(short_digest(d) for d in dict.fromkeys(event.digests.values()))
            what = f"pushed {count} tag{'s' if count != 1 else ''} {digests}" if count else f"built {short_digest(row.image_id)}"
            row.detail = what
            if not quiet:
                took = f" in {duration(event.time - row.started)}" if row.started else ""
                out.append(history(("✓ ", "green"), (name, "bold"), f" {what}{took}"))
        elif isinstance(event, ev.ImageFailed):
            row.state, row.ended, row.layers = "failed", event.time, {}
            row.detail = event.error
            out.append(history(("✗ ", "red"), (name, "bold red"), (f" failed ({event.stage}): {event.error}", "red")))
            out.extend(history((f"    {text}", "dim")) for text in event.output[-15:])
        elif isinstance(event, ev.ImageSkipped):
            row.state, row.ended, row.detail = "skipped", event.time, event.reason
            if not quiet:
                out.append(history(("– ", "dim"), (name, "bold"), f" skipped: {event.reason}"))
        return out

    def _layer(self, row: _Row, event: ev.LayerProgress) -> None:
        if event.finished:
            row.layers.pop(event.layer, None)
            row.layers_done += 1
            return
        layer = row.layers.setdefault(event.layer, _Layer(event.status))
        layer.status = event.status
        if event.current is not None:
            if layer.first is None or event.current < layer.first[1]:  # a retried layer starts over
                layer.first = (event.time, event.current)
            elapsed = event.time - layer.first[0]
            layer.rate = (event.current - layer.first[1]) / elapsed if elapsed > 0 else 0.0
            layer.current, layer.total = event.current, event.total

    # -- the live area -------------------------------------------------------------------

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        with self._lock:  # build the lines under the lock, but never hold it while rich consumes them
            lines = self._lines(time.time(), options.max_width, options.size.height)
        yield from lines

    def _lines(self, now: float, width: int, height: int) -> list[Text]:
        budget = max(2, height - 1)  # one spare line, so the live area never scrolls the terminal
        rows = list(self._rows.values())
        hidden: list[_Row] = []
        if len(rows) > budget:
            keep = sorted(rows, key=lambda r: r.state not in ACTIVE)[: budget - 1]
            hidden = [r for r in rows if r not in keep]
            rows = [r for r in rows if r in keep]
        spare = budget - len(rows) - bool(hidden)
        want = {r.name: self._wanted(r) for r in rows if r.state in ACTIVE}
        give = dict.fromkeys(want, 0)
        while spare > 0 and any(give[n] < want[n] for n in want):
            for n in want:  # round robin, so every image in flight gets some detail
                if spare > 0 and give[n] < want[n]:
                    give[n], spare = give[n] + 1, spare - 1
        name_width = min(max(len(r.name) for r in rows), 24) if rows else 0
        out: list[Text] = []
        for row in rows:
            out.append(self._header(row, now, name_width))
            out.extend(self._details(row, give.get(row.name, 0), width))
        if hidden:
            counts = Counter(row.state for row in hidden)
            out.append(line(f"  +{len(hidden)} more: " + ", ".join(f"{n} {s}" for s, n in counts.items()), "dim"))
        return out

    def _header(self, row: _Row, now: float, name_width: int) -> Text:
        if row.state in ACTIVE:
            text = line()
            text.append_text(self._spinner.render(now))  # type: ignore[arg-type]
        else:
            mark, style = MARKS[row.state]
            text = line(mark, style)
        end = row.ended if row.state not in ACTIVE and row.ended is not None else now
        elapsed = duration(end - row.started) if row.started is not None else ""
        text.append(f" {clean(row.name)[:name_width]:<{name_width}} ", "bold")
        text.append(f"{row.state:<8} {elapsed:>6}  ", MARKS.get(row.state, ("", ""))[1])
        detail = row.detail
        if row.state == "pushing" and (row.layers or row.layers_done):
            detail += f"  {row.layers_done}/{row.layers_done + len(row.layers)} layers"
        text.append(clean(detail).replace("\n", " "), "red" if row.state == "failed" else "")
        return text

    def _wanted(self, row: _Row) -> int:
        return len(row.tail) if row.state == "building" else min(len(row.layers), MAX_LAYERS + 1)

    def _details(self, row: _Row, limit: int, width: int) -> list[Text]:
        if limit <= 0:
            return []
        if row.state == "building":
            return [line(f"    {text}", "dim") for text in list(row.tail)[-limit:]]
        layers = sorted(row.layers.items(), key=lambda item: item[1].current is None)
        if len(layers) <= limit:
            return [self._layer_line(k, v, width) for k, v in layers]
        shown = [self._layer_line(k, v, width) for k, v in layers[: limit - 1]]
        rest = len(layers) - len(shown)
        return [*shown, line(f"    +{rest} more layers" if shown else f"    {rest} layers in flight", "dim")]

    def _layer_line(self, layer_id: str, layer: _Layer, width: int) -> Text:
        text = line(f"    {layer_id[:12]:<12} ", "dim")
        if layer.current is None or not layer.total:
            text.append(clean(layer.status), "dim")
            return text
        bar = max(10, min(30, width - 50))
        filled = round(bar * min(layer.current, layer.total) / layer.total)
        text.append("━" * filled, "bar.complete")
        text.append("━" * (bar - filled), "bar.back")
        text.append(f" {human_bytes(layer.current)}/{human_bytes(layer.total)}")
        if layer.rate > 0:
            text.append(f"  {human_bytes(int(layer.rate))}/s", "dim")
        return text
