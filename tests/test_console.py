"""The terminal renderer: the live area fits the screen, and the history lands in the scrollback."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from imgctl import events as ev
from imgctl.auth import remember_secret
from imgctl.render.console import ConsoleRenderer

IMAGES = ["base", "api", "web", "worker", "docs", "cli", "db", "proxy"]
STATES = "queued|building|pushing|done|failed|skipped"
DIGEST = "sha256:" + "ab12" * 16
SECRET = "Tok3n-n0t-for-screens-9d1e"


def header(name: str) -> re.Pattern[str]:
    """A row of the live area: mark, name, state and (once started) the elapsed time."""
    return re.compile(rf"^\S {re.escape(name)} +(?:queued|(?:building|pushing|done|failed|skipped) +\d[\dm.]*s)(?: |$)")


def push(name: str, ref: str, layers: int, *, done: bool = True) -> list[ev.Event]:
    out: list[ev.Event] = [ev.PushStarted(image=name, reference=ref)]
    out += [ev.LayerProgress(image=name, reference=ref, layer=f"{i:02d}" + "f" * 62, status="Preparing") for i in range(layers)]
    for step in range(1, 4 if done else 3):  # unfinished pushes stop at 8 of 12 MB
        out += [
            ev.LayerProgress(image=name, reference=ref, layer=f"{i:02d}" + "f" * 62, status="Pushing",
                             current=step * 4_000_000, total=12_000_000 + i)
            for i in range(layers)
        ]
    if done:
        out += [ev.LayerProgress(image=name, reference=ref, layer=f"{i:02d}" + "f" * 62, status="Pushed") for i in range(layers)]
        out.append(ev.PushDone(image=name, reference=ref, digest=DIGEST, size=1234))
    return out


def build(name: str, steps: int, *, until: int | None = None) -> list[ev.Event]:
    out: list[ev.Event] = []
    for step in range(1, (until or steps) + 1):
        out.append(ev.BuildStep(image=name, step=step, total=steps, instruction=f"RUN make {name} " + "--flag " * 12))
        out += [ev.BuildOutput(image=name, line=f"{name} compiling unit {i}") for i in range(5)]
        out.append(ev.BuildOutput(image=name, line=" ---> 4f2a9c1b", internal=True))
    if until is None:
        out.append(ev.BuildDone(image=name, image_id="sha256:" + "9" * 64, seconds=2.5))
    return out


def midpoint_events() -> list[ev.Event]:
    """Seven images in flight or finished, one queued: pushes with many layers, builds, a failure."""
    out: list[ev.Event] = [ev.LoggedIn(registry="registry.example", username="ci", source="environment")]
    out += [ev.ImageStarted(image=name) for name in IMAGES if name != "docs"]
    out += build("base", 3)
    for ref in ("registry.example/base:1.0", "registry.example/base:1.0-abc", "mirror.example/base:1.0"):
        out += push("base", ref, 2)
    out.append(ev.ImageDone(image="base", digests={r: DIGEST for r in ("a", "b", "c")}))
    out += build("api", 4) + push("api", "registry.example/api:1.0", 6, done=False)
    out.append(ev.Retrying(image="api", action="push registry.example/api:1.0", attempt=1, attempts=3, wait=0.5,
                           reason="503 Service Unavailable"))
    out += build("web", 5, until=3)
    out.append(ev.ImageFailed(image="web", stage="build", error="build of web failed at Step 3/5: exit code 2",
                              output=("web compiling unit 3", "web compiling unit 4", "make: *** [all] Error 2")))
    out += build("worker", 3) + push("worker", "registry.example/worker:1.0", 5, done=False)
    out += build("cli", 9, until=4) + build("db", 7, until=2) + build("proxy", 3) + push("proxy", "registry.example/proxy:1.0", 2, done=False)
    out.append(ev.Warning(message="base image pinned by tag only"))
    return out


def final_events() -> list[ev.Event]:
    out: list[ev.Event] = [ev.ImageSkipped(image="docs", reason="depends on web, which failed")]
    out += push("api", "registry.example/api:1.0", 6)
    out += push("worker", "registry.example/worker:1.0", 5) + push("proxy", "registry.example/proxy:1.0", 2)
    out += build("cli", 9)[-10:] + push("cli", "registry.example/cli:1.0", 3)
    out += build("db", 7)[-10:] + push("db", "registry.example/db:1.0", 3)
    out += [ev.ImageDone(image=name, digests={f"registry.example/{name}:1.0": DIGEST})
            for name in ("api", "worker", "proxy", "cli", "db")]
    out.append(ev.FloatingHeld(reason="1 image failed", references=("registry.example/base:latest",)))
    return out


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=80, height=24, record=True, color_system="truecolor")


def live_lines(renderer: ConsoleRenderer) -> list[str]:
    screen = terminal()
    screen.print(renderer)
    return screen.export_text().splitlines()


def feed(renderer: ConsoleRenderer, events: list[ev.Event]) -> None:
    for event in events:
        renderer(event)


def test_live_area_has_one_row_per_image_and_fits_80x24() -> None:
    renderer = ConsoleRenderer(terminal(), images=IMAGES)
    feed(renderer, midpoint_events())
    lines = live_lines(renderer)
    assert len(lines) <= 23, "\n".join(lines)
    assert all(cell_len(text) <= 80 for text in lines)
    for name in IMAGES:
        assert sum(bool(header(name).match(text)) for text in lines) == 1, (name, "\n".join(lines))
    rows = {name: next(t for t in lines if header(name).match(t)) for name in IMAGES}
    assert "queued" in rows["docs"] and "done" in rows["base"] and "failed" in rows["web"]
    assert re.search(r"pushing .*registry\.example/api:1\.0 +0/6 layers", rows["api"])
    assert rows["cli"].endswith("…") and "Step 4/9: RUN make cli" in rows["cli"]  # truncated to the width
    assert any(re.match(r"^ +\+\d+ more layers$", t) for t in lines)  # at most a few layers per image
    assert any(re.search(r"━+ 8\.0MB/12\.0MB", t) for t in lines)
    assert not any("4f2a9c1b" in t for t in lines)  # the builder's bookkeeping, hidden without -v

    feed(renderer, final_events())
    lines = live_lines(renderer)
    assert len(lines) == len(IMAGES), "\n".join(lines)  # finished images collapse to one line each
    assert [re.match(r"^\S (\S+)", t).group(1) for t in lines] == IMAGES  # type: ignore[union-attr]


def test_history_goes_to_the_scrollback() -> None:
    console = terminal()
    renderer = ConsoleRenderer(console, images=IMAGES)
    feed(renderer, midpoint_events() + final_events())
    history = " ".join(console.export_text().split(" \n"))  # long lines wrap in the scrollback
    assert "✓ base pushed 3 tags sha256:ab12ab12ab12… in" in history
    assert "✗ web failed (build): build of web failed at Step 3/5: exit code 2" in history
    assert "    make: *** [all] Error 2" in history
    assert "↻ api: retry 1/2 of push registry.example/api:1.0 in 0.5s: 503 Service Unavailable" in history
    assert "! warning: base image pinned by tag only" in history
    assert "! floating tags held back (1 image failed): registry.example/base:latest" in history
    assert "– docs skipped: depends on web, which failed" in history
    for name in ("base", "api", "worker", "proxy", "cli", "db"):
        assert len(re.findall(rf"^✓ {name} pushed", history, re.M)) == 1, name
    assert "Step " not in history.replace("at Step 3/5", "")  # progress stays in the live area


def test_quiet_prints_only_failures_retries_and_warnings() -> None:
    console = terminal()
    renderer = ConsoleRenderer(console, verbosity=-1, images=IMAGES)
    renderer.start()
    feed(renderer, midpoint_events() + final_events())
    renderer.stop()
    history = console.export_text()
    assert "✗ web failed" in history and "↻ api: retry" in history and "! warning:" in history
    assert "✓" not in history and "skipped" not in history and "logged in" not in history
    assert "\x1b[?25l" not in console.file.getvalue()  # type: ignore[attr-defined] - no live area, cursor untouched


def test_verbose_shows_the_builders_own_lines() -> None:
    renderer = ConsoleRenderer(terminal(), verbosity=1, images=["base"])
    feed(renderer, [ev.ImageStarted(image="base"), *build("base", 3, until=1)])
    assert live_lines(renderer)[-1].strip() == "---> 4f2a9c1b"


def test_no_secret_and_no_escape_sequence_reaches_the_terminal() -> None:
    remember_secret(SECRET)
    console = terminal()
    renderer = ConsoleRenderer(console, images=["base"])
    feed(renderer, [
        ev.ImageStarted(image="base"),
        ev.BuildStep(image="base", step=1, total=2, instruction=f"RUN login -p {SECRET}"),
        ev.BuildOutput(image="base", line=f"token={SECRET}\x1b[2J\x1b[31m red\x1b[0m"),
        ev.Retrying(image="base", action="push", attempt=1, attempts=3, wait=1, reason=f"denied for {SECRET}"),
    ])
    lines = live_lines(renderer)
    feed(renderer, [ev.ImageFailed(image="base", stage="build", error=f"bad {SECRET}", output=(f"x {SECRET}",))])
    shown = "\n".join(lines) + console.export_text() + console.file.getvalue()  # type: ignore[attr-defined]
    assert SECRET not in shown and "***" in shown
    assert "token=*** red" in "\n".join(lines) and "\x1b[2J" not in shown


def test_more_images_than_lines_still_fit() -> None:
    names = [f"image-{i:02d}" for i in range(40)]
    renderer = ConsoleRenderer(terminal(), images=names)
    feed(renderer, [event for name in names[:5] for event in (ev.ImageStarted(image=name), *build(name, 2, until=1))])
    lines = live_lines(renderer)
    assert len(lines) <= 23 and lines[-1].strip().startswith("+")
    assert all(any(header(name).match(t) for t in lines) for name in names[:5])  # images in flight come first


def test_events_do_not_redraw_the_live_area_each_time() -> None:
    console = terminal()
    with ConsoleRenderer(console, images=["base"]) as renderer:
        feed(renderer, [ev.ImageStarted(image="base"), *push("base", "r/base:1", 4, done=False) * 100])
        time.sleep(0.5)
    draws = console.file.getvalue().count("r/base:1  0/4 layers")  # type: ignore[attr-defined]
    assert 1 <= draws <= 8, draws  # about 8 a second, not 1200 for 1200 events


def test_an_interrupted_run_says_where_each_image_was() -> None:
    console = terminal()
    with ConsoleRenderer(console, images=["base", "api"]) as renderer:
        feed(renderer, [ev.ImageStarted(image="base"), *build("base", 2, until=1)])
    assert "■ base stopped while building: Step 1/2: RUN make base" in console.export_text()
    assert "api" not in console.export_text()


def test_live_area_refreshes_from_its_own_thread() -> None:
    console = terminal()
    with ConsoleRenderer(console, images=IMAGES) as renderer:
        feed(renderer, midpoint_events())
        time.sleep(0.4)
        feed(renderer, final_events())
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "pushing" in raw and "building" in raw  # the live area was drawn at least once
    assert "✓ db pushed 1 tag" in console.export_text()


# -- a real terminal ---------------------------------------------------------------------------

SCRIPT = """\
import os, sys, time
sys.path.insert(0, {root!r})
from rich.console import Console
from imgctl.render.console import ConsoleRenderer
from tests.test_console import IMAGES, final_events, midpoint_events

console = Console(stderr=True)
renderer = ConsoleRenderer(console, images=IMAGES)
renderer.start()
for event in midpoint_events():
    renderer(event)
    time.sleep(0.004)
time.sleep(0.4)  # at least two refreshes, so the screen shows the latest state
open({paused!r}, "w").close()
deadline = time.time() + 5
while not os.path.exists({go!r}) and time.time() < deadline:
    time.sleep(0.02)
for event in final_events():
    renderer(event)
    time.sleep(0.004)
renderer.stop()
open({done!r}, "w").close()
time.sleep(60)
"""


def wait_for(path: Path, seconds: float = 8.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"the replay did not reach {path.name} in time"
        time.sleep(0.05)


def test_replay_on_a_real_80x24_terminal(tmp_path: Path) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.fail("tmux is needed for the real-terminal test")
    root = str(Path(__file__).resolve().parent.parent)
    script = tmp_path / "replay.py"
    paused, go, done = tmp_path / "paused", tmp_path / "go", tmp_path / "done"
    script.write_text(SCRIPT.format(root=root, paused=str(paused), go=str(go), done=str(done)))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX", "NO_COLOR", "TTY_INTERACTIVE")}
    tmux_cmd = [tmux, "-L", f"imgctl-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
    subprocess.run([*tmux_cmd, "new-session", "-d", "-x", "80", "-y", "24", "-s", "replay",
                    f"{sys.executable} {script}"], check=True, env=env, timeout=10)

    def screen(*options: str) -> list[str]:
        done_ = subprocess.run([*tmux_cmd, "capture-pane", "-p", "-t", "replay", *options], capture_output=True, text=True, timeout=5)
        return done_.stdout.splitlines()

    try:
        wait_for(paused)
        middle = screen()
        scrollback = "\n".join(screen("-S", "-"))
        go.touch()
        wait_for(done)
        time.sleep(0.2)
        final = screen()
        everything = screen("-S", "-")  # the terminal's scrollback too: long runs scroll
    finally:
        subprocess.run([*tmux_cmd, "kill-server"], capture_output=True, timeout=5)

    shown = "\n".join(middle)
    assert len(middle) <= 24
    for name in IMAGES:
        assert sum(bool(header(name).match(text)) for text in middle) == 1, (name, shown)
    assert "↻ api: retry 1/2" in scrollback and "✗ web failed (build)" in scrollback

    shown = "\n".join(everything)
    for name in ("base", "api", "worker", "proxy", "cli", "db"):
        assert len(re.findall(rf"^✓ {name} pushed \d tags? sha256:ab12ab12ab12… in", shown, re.M)) == 1, (name, shown)
    assert shown.count("✗ web failed (build): build of web failed at Step 3/5: exit code 2") == 1, shown
    assert "    make: *** [all] Error 2" in shown and shown.count("– docs skipped: depends on web, which failed") == 1
    # No row of the live area was left behind, on the screen or above it: it never outgrew the terminal.
    assert not any(header(name).match(text) for name in IMAGES for text in everything), shown
    assert any(text.startswith("! floating tags held back (1 image failed)") for text in final), "\n".join(final)
