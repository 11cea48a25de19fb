"""Each image's full build log in a file, and the summary printed at the end of a release."""

from __future__ import annotations

import io
import re
import tracemalloc
from pathlib import Path

import pytest

from imgctl import events as ev
from imgctl.auth import remember_secret
from imgctl.render.github import GitHubRenderer
from imgctl.render.logs import BuildLogs, log_path
from imgctl.render.summary import print_summary, summary_rows, summary_text
from imgctl.results import ImageResult, ReleaseResult, TagResult
from tests.conftest import unique, write_base_context, write_config, write_context

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
CHATTY = 'RUN echo {marker} && for i in $(seq 1 300); do echo "chatty line $i of 300"; done\n'  # marker: no cache



# -- real releases ---------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.builder("classic")
def test_log_dir_holds_every_line_of_every_image(tmp_path: Path, registry, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base", CHATTY.format(marker=ns))
    write_context(tmp_path / "app", f'ARG B\nFROM ${{B}}\nRUN echo {ns} && echo "app says hi" && echo "and bye"\n')
    config = write_config(tmp_path, {
        "registry": registry.host, "namespace": ns,
        "images": [
            {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
            {"name": "team/app", "context": "app", "build_args": {"B": "{registry}/{namespace}/base:{version}"},
             "tags": ["{version}", "latest"]},
        ],
    })
    logs = tmp_path / "logs"
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--log-dir", str(logs), "-q")
    assert run.code == 0, run.output
    assert sorted(p.name for p in logs.iterdir()) == ["base.log", "team+app.log"]

    base = (logs / "base.log").read_text().splitlines()
    chatty = [line for line in base if line.startswith("chatty line ")]
    assert chatty == [f"chatty line {i} of 300" for i in range(1, 301)]  # all of them, in order, though -q showed none
    assert "chatty line 1 of 300" not in run.stderr
    assert any(re.match(r"Step \d+/\d+ : RUN echo \w+ && for i in", line) for line in base)
    assert any(line.startswith(" ---> ") for line in base)  # the builder's own lines too
    assert f"pushed {registry.host}/{ns}/base:1.0.0 sha256:" in "\n".join(base)
    # the floating tag, added after the image was done, is appended to the same file
    assert f"tagged {registry.host}/{ns}/base:latest sha256:" in "\n".join(base)

    app = (logs / "team+app.log").read_text()
    assert "app says hi\nand bye\n" in app
    assert f"Build logs: {logs}" in run.stdout


@pytest.mark.engine
@pytest.mark.builder("classic")
def test_failed_build_log_and_the_default_folder(tmp_path: Path, registry, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base", f'RUN echo {ns} && echo "about to fail: disk gremlins" && echo "second to last" && exit 3\n')
    config = write_config(tmp_path, {"registry": registry.host, "namespace": ns,
                                      "images": [{"name": "base", "context": "base"}]})
    run = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert run.code == 1, run.output
    named = re.search(r"^Build logs: (.+)$", run.stdout, re.M)
    assert named, run.stdout
    folder = Path(named.group(1))
    assert folder.parent == tmp_path and folder.name.startswith("imgctl-logs-")  # TMPDIR is tmp_path here
    log = (folder / "base.log").read_text()
    assert re.search(r'^Step \d+/\d+ : RUN echo t\w+ && echo "about to fail: disk gremlins"', log, re.M)
    assert "about to fail: disk gremlins\nsecond to last\n" in log
    assert log.splitlines().count("second to last") == 1  # the failure line does not repeat the output
    assert re.search(r"^FAILED \(build\): build of base failed at Step .* returned a non-zero code: 3$", log, re.M)

    # the failure is shown again under the table: the step, the last output lines, the log file
    after_table = run.stdout[run.stdout.index("RESULT"):]
    assert "base FAILED (build): build of base failed at Step " in after_table
    assert "    about to fail: disk gremlins\n    second to last\n" in after_table
    assert f"full log: {folder / 'base.log'}" in after_table
    assert run.stdout.rstrip().endswith("Release FAILED: 0/1 images done.")


# -- BuildLogs -------------------------------------------------------------------------------


def test_each_line_is_in_the_file_before_the_event_is_passed_on(tmp_path: Path) -> None:
    seen: list[str] = []

    def inner(event: ev.Event) -> None:
        if isinstance(event, ev.BuildOutput):
            assert event.line in log_path(tmp_path, "a/b").read_text()
        seen.append(event.type)

    logs = BuildLogs(inner, tmp_path)
    logs(ev.ImageStarted(image="a/b"))
    logs(ev.BuildStep(image="a/b", step=1, total=1, instruction="RUN x"))
    logs(ev.BuildOutput(image="a/b", line="out 1"))
    logs(ev.BuildOutput(image="a/b", line=" ---> 0123abcd", internal=True))
    logs(ev.LoggedIn(registry="r", username="u", source="env"))  # no image: passed on, in no file
    logs(ev.ImageDone(image="a/b", digests={}))
    assert not logs._files  # closed at the image's end
    logs(ev.PushDone(image="a/b", reference="r/a/b:latest", digest=D1, size=1))  # a floating tag, later
    logs.close()
    assert seen == ["image_started", "build_step", "build_output", "build_output", "logged_in", "image_done", "push_done"]
    assert (tmp_path / "a+b.log").read_text() == (
        f"building\nStep 1/1 : RUN x\nout 1\n ---> 0123abcd\ndone\npushed r/a/b:latest {D1}\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["a+b.log"]


def test_logs_are_written_live_under_github_groups(tmp_path: Path) -> None:
    """The GitHub renderer holds an image's events until it ends; the log file must not wait."""
    shown: list[ev.Event] = []
    logs = BuildLogs(GitHubRenderer(shown.append, io.StringIO(), {"GITHUB_ACTIONS": "true"}), tmp_path)
    logs(ev.ImageStarted(image="web"))
    logs(ev.BuildOutput(image="web", line="compiling"))
    assert shown == []
    assert "compiling" in (tmp_path / "web.log").read_text()


def test_default_folder_is_new_and_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    first, second = BuildLogs(lambda e: None), BuildLogs(lambda e: None)
    assert first.folder != second.folder
    assert first.folder.parent == tmp_path and first.folder.name.startswith("imgctl-logs-")


def test_a_log_that_cannot_be_written_warns_once_and_never_raises(tmp_path: Path) -> None:
    shown: list[ev.Event] = []
    logs = BuildLogs(shown.append, tmp_path / "logs")
    (tmp_path / "logs").rmdir()
    (tmp_path / "logs").write_text("not a folder")
    logs(ev.ImageStarted(image="web"))
    logs(ev.BuildOutput(image="web", line="x"))
    warnings = [e for e in shown if isinstance(e, ev.Warning)]
    assert len(warnings) == 1 and "build logs are incomplete" in warnings[0].message
    assert [e.type for e in shown] == ["warning", "image_started", "build_output"]
    assert logs.error


def test_memory_stays_flat_and_secrets_are_redacted(tmp_path: Path) -> None:
    secret = "hunter2-" + unique()
    remember_secret(secret)
    count = 0

    def inner(event: ev.Event) -> None:
        nonlocal count
        count += 1

    logs = BuildLogs(inner, tmp_path)
    tracemalloc.start()
    try:
        logs(ev.ImageStarted(image="big"))
        for i in range(200_000):
            text = f"token={secret}" if i % 50_000 == 0 else f"output line {i} " + "x" * 80
            logs(ev.BuildOutput(image="big", line=text))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    logs(ev.ImageFailed(image="big", stage="build", error=f"failed with {secret}"))
    logs.close()
    assert count == 200_002
    assert peak < 1_000_000, f"peak {peak} bytes"  # the file holds ~20 MB
    path = tmp_path / "big.log"
    assert path.stat().st_size > 18_000_000
    data = path.read_bytes()
    assert secret.encode() not in data
    assert data.count(b"token=***") == 4 and b"failed with ***" in data
    with path.open() as file:
        assert sum(1 for _ in file) == 200_000 + 2


# -- the summary -----------------------------------------------------------------------------


def constructed_result() -> ReleaseResult:
    base = ImageResult(
        "base", status="released", size=2_000_000, stored_size=2_000_000, previous_size=1_700_000, layers=2, seconds=3.25,
        tags=[
            TagResult("reg:5000/ns/base:1.2.3", "default", False, status="pushed", digest=D1, verified=True),
            TagResult("reg:5000/ns/base:latest", "default", True, status="held"),
        ],
    )
    smaller = ImageResult(
        "team/tool", status="released", size=1_000_000, stored_size=1_000_000, previous_size=1_500_000, layers=5, seconds=1.0,
        tags=[TagResult("reg:5000/ns/team/tool:1.2.3", "default", False, status="unchanged", digest=D2, verified=True)],
    )
    broken = ImageResult(
        "broken", status="failed", stage="build", size=None, layers=None,
        error="build of broken failed at Step 3/3 : RUN make: The command '/bin/sh -c make' returned a non-zero code: 2",
        output=tuple(f"make line {i}" for i in range(1, 31)),
        tags=[TagResult("reg:5000/ns/broken:1.2.3", "default", False)],
    )
    later = ImageResult("later", status="skipped", error="dependency broken failed",
                        tags=[TagResult("reg:5000/ns/later:1.2.3", "default", False)])
    return ReleaseResult(images=[base, smaller, broken, later], floating="held back: 1 image failed, 1 skipped", retries=2)


def test_summary_table_columns_sizes_layers_and_tags() -> None:
    text = summary_text(constructed_result(), log_dir=Path("/tmp/imgctl-logs-abc"))
    lines = text.splitlines()
    header = lines[0]
    assert header.split() == ["IMAGE", "TAGS", "DIGEST", "SIZE", "LAYERS", "TIME", "RESULT"]
    columns = {name: header.index(name) for name in header.split()}
    row = lines[1]
    assert row.startswith("base ")
    for name, value in [("TAGS", "reg:5000/ns/base:1.2.3  [ok]"), ("DIGEST", D1), ("SIZE", "2.0MB (+300.0kB)"),
                        ("LAYERS", "2 "), ("TIME", "3.2s"), ("RESULT", "RELEASED")]:
        assert row[columns[name]:].startswith(value), (name, row)
    assert lines[2].strip() == "reg:5000/ns/base:latest  [held back]"
    assert lines[2].index("reg:") == columns["TAGS"]
    tool = next(line for line in lines if line.startswith("team/tool"))
    assert tool[columns["SIZE"]:].startswith("1.0MB (-500.0kB)") and tool[columns["LAYERS"]:].startswith("5 ")
    assert "[unchanged]" in tool
    broken = next(line for line in lines if line.startswith("broken "))
    assert broken[columns["SIZE"]:].startswith("-") and broken.endswith("FAILED")
    assert "\x1b" not in text


def test_summary_shows_the_failure_again_at_the_end() -> None:
    text = summary_text(constructed_result(), log_dir=Path("/tmp/imgctl-logs-abc"))
    after = text.split("\nbroken FAILED (build): ", 1)[1]
    assert after.startswith("build of broken failed at Step 3/3 : RUN make: The command")
    shown = [line.strip() for line in after.splitlines()[1:11]]
    assert shown == [f"make line {i}" for i in range(21, 31)]  # its last ten lines
    assert "make line 20\n" not in text
    assert "    full log: /tmp/imgctl-logs-abc/broken.log" in text
    assert "later skipped: dependency broken failed" in text
    assert "Floating tags (latest, ...) held back: 1 image failed, 1 skipped" in text
    assert "Retries used: 2" in text
    assert text.splitlines()[-2:] == ["Build logs: /tmp/imgctl-logs-abc", "Release FAILED: 2/4 images done."]


def test_summary_without_previous_size_or_log_dir() -> None:
    result = ReleaseResult(images=[ImageResult("solo", status="built", size=2_000_000, seconds=1.0,
                                               tags=[TagResult("r/solo:1", "d", False, status="built")])])
    text = summary_text(result)
    assert "2.0MB  " in text and "(+" not in text and "Build logs" not in text
    assert text.splitlines()[-1] == "Release succeeded: 1/1 images done."


def test_summary_is_redacted() -> None:
    secret = "s3cret-" + unique()
    remember_secret(secret)
    result = ReleaseResult(images=[ImageResult("x", status="failed", stage="build", error=f"bad {secret}",
                                               output=(f"echo {secret}",))])
    text = summary_text(result)
    assert secret not in text and "bad ***" in text and "echo ***" in text


def test_summary_rows_and_report_carry_layers_and_previous_size() -> None:
    rows = {row["image"]: row for row in summary_rows(constructed_result())}
    assert rows["base"]["layers"] == 2 and rows["base"]["previous_size"] == "1.7MB"
    assert rows["broken"]["layers"] is None and rows["broken"]["previous_size"] == "-"


def test_terminal_summary_is_a_table_that_fits() -> None:
    from rich.console import Console

    out = io.StringIO()
    print_summary(constructed_result(), Console(file=out, width=100, color_system=None), log_dir=Path("/tmp/l"))
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["IMAGE", "TAGS", "DIGEST", "SIZE", "LAYERS", "TIME", "RESULT"]
    assert all(len(line) <= 100 for line in lines)
    base = next(line for line in lines if line.startswith("base "))
    assert "1.2.3  [ok]" in base and "2.0MB (+300.0kB)" in base and base.rstrip().endswith("RELEASED")
    assert "sha256:1111" in base  # cut short to fit, never dropped
    assert "broken FAILED (build): build of broken failed at Step 3/3" in text
    assert lines[-1] == "Release FAILED: 2/4 images done."
