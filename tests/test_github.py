"""GitHub Actions support: groups, annotations, masks, step outputs and the job summary."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml

from imgctl import events as ev
from imgctl import streams
from imgctl.render.github import GitHubRenderer
from imgctl.render.github_annotations import dockerfile_line
from imgctl.render.github_commands import add_masks, escape_data, escape_property, workflow_command
from imgctl.render.github_outputs import output_key, release_outputs, step_summary, write_outputs
from imgctl.render.plain import PlainRenderer
from imgctl.results import ImageResult, ReleaseResult, TagResult
from tests.conftest import unique, write_base_context, write_context

STREAMS = Path(__file__).parent / "fixtures" / "streams"
GH = {"GITHUB_ACTIONS": "true"}
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def parse_github_output(text: str) -> dict[str, str]:
    """Reads a $GITHUB_OUTPUT file the way the runner does: `k=v` lines and `k<<DELIM` heredocs."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            value: list[str] = []
            while lines[i] != delimiter:
                value.append(lines[i])
                i += 1
            i += 1
            out[key] = "\n".join(value)
        else:
            key, value_text = line.split("=", 1)
            out[key] = value_text
    return out


def groups_of(text: str) -> list[tuple[str, list[str]]]:
    """(title, lines) of every ::group::, checking that groups never nest and always close."""
    found: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in text.splitlines():
        if line.startswith("::group::"):
            assert current is None, f"nested group: {line}"
            current = (line.removeprefix("::group::"), [])
        elif line == "::endgroup::":
            assert current is not None, "endgroup without group"
            found.append(current)
            current = None
        elif current is not None:
            current[1].append(line)
    assert current is None, "a group was left open"
    return found


def recorded_build(fixture: str, image: str) -> tuple[str, list[ev.Event], ev.ImageFailed | None]:
    """The Dockerfile and the events a recorded engine stream gives, as the engine module would."""
    from imgctl.errors import BuildFailed

    records = [json.loads(line) for line in (STREAMS / fixture).read_text().splitlines()]
    header, chunks = records[0], records[1:]
    decoder = streams.JsonStreamDecoder()
    parser = streams.BuildStreamParser(image)
    events: list[ev.Event] = [ev.ImageStarted(image=image)]
    for chunk in chunks:
        for record in decoder.feed(chunk["text"]):
            events.extend(parser.handle(record))
    try:
        more, _image_id = parser.finish()
        events.extend(more)
        failed = None
    except BuildFailed as exc:
        failed = ev.ImageFailed(image=image, stage="build", error=exc.message, output=exc.output)
    return header["dockerfile"], events, failed


# -- escaping ----------------------------------------------------------------------------------


def test_escape_data_and_property_follow_the_workflow_command_rules() -> None:
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_data("a:b,c") == "a:b,c"  # only properties escape : and ,
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    # % first, so an already-escaped-looking value is not unescaped by the runner
    assert escape_data("%0A") == "%250A"


def test_workflow_command_formats_properties_and_leaves_out_none() -> None:
    line = workflow_command("error", "boom\nsecond line", file="a/Dockerfile", line=3, title="x: y, z", col=None)
    assert line == "::error file=a/Dockerfile,line=3,title=x%3A y%2C z::boom%0Asecond line"
    assert workflow_command("endgroup") == "::endgroup::"


def test_add_masks_masks_each_secret_once_and_escapes_it() -> None:
    out = io.StringIO()
    add_masks(["s3cret", "", "multi\nline%", "s3cret"], out)
    assert out.getvalue().splitlines() == ["::add-mask::s3cret", "::add-mask::multi%0Aline%25"]


# -- Dockerfile lines --------------------------------------------------------------------------

DOCKERFILE = """\
# syntax=docker/dockerfile:1
# a comment
ARG X=1

FROM scratch
COPY busybox /bin/busybox
# mid comment
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo a && \\
    # a comment inside a continuation
    echo b \\
      && false
CMD ["sh"]
"""


def test_dockerfile_line_maps_steps_as_the_classic_builder_numbers_them() -> None:
    # what dockerd 20.10 printed for this file: ARG before FROM counts, continuations are joined
    assert dockerfile_line(DOCKERFILE, 1, 6, "ARG X=1") == 3
    assert dockerfile_line(DOCKERFILE, 2, 6, "FROM scratch") == 5
    assert dockerfile_line(DOCKERFILE, 5, 6, "RUN echo a &&     echo b       && false") == 9
    assert dockerfile_line(DOCKERFILE, 6, 6, 'CMD ["sh"]') == 13
    # --target cuts later stages: fewer steps than instructions is fine
    assert dockerfile_line(DOCKERFILE, 3, 4, "COPY busybox /bin/busybox") == 6
    # labels (imgctl always adds the OCI ones) are appended as extra LABEL steps: more steps is fine
    assert dockerfile_line(DOCKERFILE, 5, 9, "RUN echo a &&     echo b       && false") == 9


def test_dockerfile_line_maps_steps_as_buildkit_numbers_them() -> None:
    # BuildKit counts only what runs, from 1 in each stage: "[1/3] COPY", "[3/3] RUN echo a ..."
    assert dockerfile_line(DOCKERFILE, 1, 3, "COPY busybox /bin/busybox", buildkit=True) == 6
    assert dockerfile_line(DOCKERFILE, 3, 3, "RUN echo a &&     echo b       && false", buildkit=True) == 9
    twice = "FROM scratch\nRUN make\nRUN make\n"
    assert dockerfile_line(twice, 2, 2, "RUN make", buildkit=True) is None  # two read the same: do not guess
    assert dockerfile_line(twice, 2, 3, "RUN make") == 2  # the classic builder's step 2 is line 2


def test_dockerfile_line_refuses_to_guess() -> None:
    assert dockerfile_line(DOCKERFILE, 5, 6, "RUN something else") is None  # file changed since
    assert dockerfile_line(DOCKERFILE, 7, 9, "LABEL a=1") is None  # a label step: no line of the file
    assert dockerfile_line(DOCKERFILE, 6, 5, 'CMD ["sh"]') is None  # step past the total: nonsense
    assert dockerfile_line(DOCKERFILE, 0, 6, "ARG X=1") is None
    heredoc = "FROM scratch\nRUN <<EOF\necho hi\nEOF\n"
    assert dockerfile_line(heredoc, 2, 2, "RUN <<EOF") in (None, 2)


# -- the renderer ------------------------------------------------------------------------------


def interleaved_events() -> list[ev.Event]:
    """Two images building at once, their lines interleaved as the engine delivers them."""
    return [
        ev.LoggedIn(registry="127.0.0.1:5000", username="ci", source="environment"),
        ev.ImageStarted(image="base"),
        ev.ImageStarted(image="team/app"),
        ev.BuildStep(image="base", step=1, total=2, instruction="FROM scratch"),
        ev.BuildStep(image="team/app", step=1, total=2, instruction="FROM scratch"),
        ev.BuildOutput(image="base", line="base line 1"),
        ev.BuildOutput(image="team/app", line="app line 1"),
        ev.BuildStep(image="base", step=2, total=2, instruction="RUN base"),
        ev.Retrying(image="team/app", action="push x", attempt=1, attempts=3, wait=0.5, reason="503"),
        ev.BuildOutput(image="team/app", line="app line 2"),
        ev.BuildDone(image="base", image_id="sha256:" + "a" * 64, seconds=1.5),
        ev.PushStarted(image="base", reference="r/base:1"),
        ev.LayerProgress(image="base", reference="r/base:1", layer="abc", status="Pushing", current=1, total=9),
        ev.LayerProgress(image="base", reference="r/base:1", layer="abc", status="Pushed"),
        ev.PushDone(image="base", reference="r/base:1", digest=D1, size=500),
        ev.BuildOutput(image="team/app", line="app line 3"),
        ev.ImageDone(image="base", digests={"r/base:1": D1}),
        ev.Warning(image="team/app", message="careful: 100%"),
        ev.ImageFailed(image="team/app", stage="push", error="push failed: denied", output=()),
        ev.PushStarted(image="base", reference="r/base:latest"),  # floating tags, after the group
        ev.PushDone(image="base", reference="r/base:latest", digest=D1, size=500),
    ]


def test_off_github_the_renderer_only_passes_events_through() -> None:
    alone, wrapped = io.StringIO(), io.StringIO()
    plain = PlainRenderer(alone)
    renderer = GitHubRenderer(PlainRenderer(wrapped), wrapped, {"GITHUB_ACTIONS": "false"})
    for event in interleaved_events():
        plain(event)
        renderer(event)
    renderer.close()
    assert wrapped.getvalue() == alone.getvalue()
    assert not [line for line in wrapped.getvalue().splitlines() if line.startswith("::")]


def test_on_github_each_image_log_is_one_group_despite_interleaving() -> None:
    out = io.StringIO()
    renderer = GitHubRenderer(PlainRenderer(out), out, GH)
    for event in interleaved_events():
        renderer(event)
    renderer.close()
    text = out.getvalue()
    groups = dict(groups_of(text))
    assert set(groups) == {"base: done", "team/app: FAILED (push)"}
    base = groups["base: done"]
    assert all(line.startswith("base | ") for line in base), base
    assert "base | base line 1" in base and "base | Step 2/2 : RUN base" in base
    assert "base | pushed r/base:1 " + D1 in base
    assert not any("1/9" in line or "B/9B" in line for line in base)  # no replayed throttled progress
    app = groups["team/app: FAILED (push)"]
    assert [line for line in app if "app line" in line] == [f"team/app | app line {n}" for n in (1, 2, 3)]
    assert all(line.startswith("team/app | ") for line in app), app

    lines = text.splitlines()
    # live: the login, one-line notes, the retry and the warning are printed as they happen
    assert lines[0].startswith("logged in to 127.0.0.1:5000")
    assert lines[1] == "base | started; its log follows as one group when it is done"
    assert lines[2] == "team/app | started; its log follows as one group when it is done"
    assert lines.index("base | built in 1.5s") < lines.index("::group::base: done")
    assert lines.index("team/app | retry 1/2 of push x in 0.5s: 503") < lines.index("::group::base: done")
    assert "::warning title=imgctl%3A team/app::careful: 100%25" in lines
    # the failure is printed after its group, where it is seen without expanding anything
    end_of_app = len(lines) - 1 - lines[::-1].index("::endgroup::")
    assert lines[end_of_app + 1] == "team/app | FAILED (push): push failed: denied"
    assert lines[end_of_app + 2] == "::error title=imgctl%3A team/app failed (push)::push failed: denied"
    # events after the image's group closed (floating tags) pass straight through
    assert lines[-2:] == ["base | pushing r/base:latest", f"base | pushed r/base:latest {D1}"]


def test_a_failed_build_from_a_recorded_stream_is_annotated_at_its_dockerfile_line(tmp_path: Path) -> None:
    dockerfile_text, events, failed = recorded_build("build_run_fails.jsonl", "web")
    assert failed is not None
    dockerfile = tmp_path / "web" / "Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text("# syntax=docker/dockerfile:1\n\n" + dockerfile_text)  # two more lines above
    out = io.StringIO()
    renderer = GitHubRenderer(
        PlainRenderer(out), out, {**GH, "GITHUB_WORKSPACE": str(tmp_path)}, dockerfiles={"web": dockerfile}
    )
    for event in [*events, failed]:
        renderer(event)
    lines = out.getvalue().splitlines()
    (group,) = groups_of(out.getvalue())
    assert group[0] == "web: FAILED (build)"
    assert "web | before-fail" in group[1]
    error = next(line for line in lines if line.startswith("::error "))
    props, message = error.removeprefix("::error ").split("::", 1)
    assert props == "file=web/Dockerfile,line=6,title=imgctl%3A web failed (build) at step 4/5"
    assert message.startswith("build of web failed at Step 4/5 : RUN echo before-fail && false: ")
    assert "returned a non-zero code: 1%0Abefore-fail" in message
    assert "\n" not in error


def test_a_failed_build_whose_dockerfile_changed_names_the_file_but_no_line(tmp_path: Path) -> None:
    _text, events, failed = recorded_build("build_run_fails.jsonl", "web")
    assert failed is not None
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nRUN something else\n")
    out = io.StringIO()
    renderer = GitHubRenderer(PlainRenderer(out), out, {**GH, "GITHUB_WORKSPACE": str(tmp_path)}, dockerfiles={"web": dockerfile})
    for event in [*events, failed]:
        renderer(event)
    error = next(line for line in out.getvalue().splitlines() if line.startswith("::error "))
    assert error.startswith("::error file=Dockerfile,title=")


def test_without_groups_events_go_to_the_inner_renderer_live_and_annotations_to_out() -> None:
    seen: list[ev.Event] = []
    out = io.StringIO()
    renderer = GitHubRenderer(seen.append, out, GH, groups=False)
    events = interleaved_events()
    for event in events:
        renderer(event)
    assert seen == events
    assert out.getvalue().splitlines() == [
        "::warning title=imgctl%3A team/app::careful: 100%25",
        "::error title=imgctl%3A team/app failed (push)::push failed: denied",
    ]


def test_close_prints_what_an_interrupted_release_left_held_back() -> None:
    out = io.StringIO()
    renderer = GitHubRenderer(PlainRenderer(out), out, GH, notes=False)
    renderer(ev.ImageStarted(image="slow"))
    renderer(ev.BuildOutput(image="slow", line="half way"))
    assert out.getvalue() == ""
    renderer.close()
    assert groups_of(out.getvalue()) == [("slow: unfinished", ["slow | building", "slow | half way"])]
    renderer.close()  # idempotent
    assert out.getvalue().count("::group::") == 1


def test_an_image_skipped_before_it_started_is_one_live_line() -> None:
    out = io.StringIO()
    renderer = GitHubRenderer(PlainRenderer(out), out, GH)
    renderer(ev.ImageSkipped(image="app", reason="dependency base failed"))
    assert out.getvalue() == "app | skipped: dependency base failed\n"


def test_a_huge_build_log_is_printed_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    import imgctl.render.github as github

    monkeypatch.setattr(github, "MAX_BUFFERED", 5)
    out = io.StringIO()
    renderer = GitHubRenderer(PlainRenderer(out), out, GH, notes=False)
    renderer(ev.ImageStarted(image="big"))
    for n in range(7):
        renderer(ev.BuildOutput(image="big", line=f"line {n}"))
    renderer(ev.ImageDone(image="big", digests={}))
    titles = [title for title, _ in groups_of(out.getvalue())]
    assert titles == ["big: log, part 1", "big: done, part 2"]
    assert sum(len(lines) for _, lines in groups_of(out.getvalue())) == 8  # building + 7 lines


# -- outputs and summary ---------------------------------------------------------------------


def constructed_result() -> ReleaseResult:
    base = ImageResult(
        "base", status="released", image_id="sha256:" + "a" * 64, size=1_234_567, seconds=2.0,
        tags=[
            TagResult("reg:5000/ns/base:1.2.3", "default", False, status="pushed", digest=D1, verified=True),
            TagResult("reg:5000/ns/base:latest", "default", True, status="held"),
        ],
    )
    app = ImageResult(
        "team/web.app", status="released", size=2_000_000,
        # a re-run: the registry already held this image under this tag
        tags=[TagResult("reg:5000/ns/team/web.app:1.2.3", "default", False, status="unchanged", digest=D2, verified=True)],
    )
    broken = ImageResult(
        "broken", status="failed", stage="build", error="build of broken failed: a | b\nnext <line>",
        tags=[
            TagResult("reg:5000/ns/broken:1.2.3", "default", False),
            # pushed but not confirmed: not in the outputs
            TagResult("reg:5000/ns/broken:1.2", "default", False, status="failed", digest=D2, error="verify"),
        ],
    )
    skipped = ImageResult("later", status="skipped", error="dependency broken failed")
    return ReleaseResult(images=[base, app, broken, skipped], floating="held back: 1 image failed or skipped")


def test_release_outputs_hold_only_pushed_tags() -> None:
    outputs = release_outputs(constructed_result())
    assert json.loads(outputs["digests"]) == {"reg:5000/ns/base:1.2.3": D1, "reg:5000/ns/team/web.app:1.2.3": D2}
    assert json.loads(outputs["tags"]) == ["reg:5000/ns/base:1.2.3", "reg:5000/ns/team/web.app:1.2.3"]
    assert outputs["base-digest"] == D1
    assert outputs["team_web_app-digest"] == D2
    assert "broken-digest" not in outputs and "later-digest" not in outputs


def test_output_keys_are_safe_and_clashes_write_neither() -> None:
    assert output_key("team/web.app") == "team_web_app"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", output_key("a.b/c__d-e"))
    result = ReleaseResult(images=[
        ImageResult("a/b", status="released", tags=[TagResult("r/a/b:1", "d", False, status="pushed", digest=D1)]),
        ImageResult("a_b", status="released", tags=[TagResult("r/a_b:1", "d", False, status="pushed", digest=D2)]),
    ])
    outputs = release_outputs(result)
    assert "a_b-digest" not in outputs
    assert json.loads(outputs["digests"]) == {"r/a/b:1": D1, "r/a_b:1": D2}


def test_write_outputs_appends_heredocs_and_a_summary(tmp_path: Path) -> None:
    output, summary = tmp_path / "output", tmp_path / "summary"
    output.write_text("earlier=kept\n")
    summary.write_text("# Earlier step\n")
    result = constructed_result()
    written = write_outputs(result, {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)})

    text = output.read_text()
    assert re.search(r"^digests<<ghadelimiter_[0-9a-f]{32}$", text, re.M)
    delimiters = re.findall(r"<<(.+)$", text, re.M)
    assert len(set(delimiters)) == len(delimiters) == 4  # one random delimiter per value
    parsed = parse_github_output(text)
    assert parsed == {"earlier": "kept", **written}
    assert json.loads(parsed["tags"]) == ["reg:5000/ns/base:1.2.3", "reg:5000/ns/team/web.app:1.2.3"]

    markdown = summary.read_text()
    assert markdown.startswith("# Earlier step\n### imgctl release failed: 2/4 images done\n")
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert rows[0] == "| Image | Tags | Digest | Size | Result |"
    assert len(rows) == 2 + 4
    assert rows[2] == (
        f"| base | `reg:5000/ns/base:1.2.3` (pushed)<br>`reg:5000/ns/base:latest` (held back) | `{D1}` | 1.2MB | released |"
    )
    assert "`reg:5000/ns/team/web.app:1.2.3` (unchanged, already there) | `" + D2 + "` | 2.0MB | released |" in rows[3]
    assert rows[4].startswith("| broken | `reg:5000/ns/broken:1.2.3` (not pushed)<br>`reg:5000/ns/broken:1.2` (FAILED) | - | - |")
    assert "a \\| b<br>next &lt;line&gt;" in rows[4]  # no cell is broken by | or a newline
    assert rows[4].count(" | ") == 4
    assert rows[5] == "| later | - | - | - | skipped: dependency broken failed |"
    assert (
        "Floating tags held back (1 image failed or skipped), still pointing where they did: `reg:5000/ns/base:latest`"
        in markdown
    )


def test_write_outputs_without_the_variables_writes_nothing(tmp_path: Path) -> None:
    assert "digests" in write_outputs(constructed_result(), {})
    assert list(tmp_path.iterdir()) == []


def test_step_summary_of_a_clean_release_has_no_held_back_line() -> None:
    result = ReleaseResult(images=[constructed_result().images[1]], floating="pushed")
    markdown = step_summary(result)
    assert "### imgctl release succeeded: 1/1 images done" in markdown
    assert "held back" not in markdown


# -- the real CLI on a real registry ---------------------------------------------------------

BROKEN_DOCKERFILE = """\
# a failing image
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "false"]
"""


@pytest.mark.engine
@pytest.mark.builder("classic")
def test_release_on_github_actions_groups_annotates_and_writes_outputs(tmp_path: Path, registry, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base")
    write_context(tmp_path / "app", "ARG BASE\nFROM ${BASE}\nRUN echo app-build-line\n")
    broken = write_base_context(tmp_path / "broken")
    (broken / "Dockerfile").write_text(BROKEN_DOCKERFILE)
    config = tmp_path / "imgctl.yaml"
    config.write_text(yaml.safe_dump({
        "registry": registry.host,
        "namespace": ns,
        "images": [
            {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
            {"name": "tools/app", "context": "app", "build_args": {"BASE": "{registry}/{namespace}/base:{version}"},
             "tags": ["{version}", "latest"]},
            {"name": "broken", "context": "broken", "tags": ["{version}"]},
        ],
    }))
    output, summary = tmp_path / "gh-output", tmp_path / "gh-summary"
    output.touch()
    summary.touch()
    run = imgctl(
        "release", "-c", str(config), "--version", "2.0.1",
        env={"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
             "GITHUB_WORKSPACE": str(tmp_path)},
    )
    assert run.code == 1, run.output  # broken fails; the others are pushed
    assert "Traceback" not in run.output

    groups = dict(groups_of(run.stderr))
    assert {"base: done", "tools/app: done", "broken: FAILED (build)"} <= set(groups), run.stderr
    for title, lines in groups.items():
        image = title.split(": ")[0]
        assert all(line.startswith(f"{image} | ") for line in lines), (title, lines)
    assert "tools/app | app-build-line" in groups["tools/app: done"]
    error = next(line for line in run.stderr.splitlines() if line.startswith("::error "))
    # imgctl's OCI labels are appended as extra steps: "3/N", N > 3, and still line 4
    assert re.match(r"::error file=broken/Dockerfile,line=4,title=imgctl%3A broken failed \(build\) at step 3/\d+::", error), error

    pushed = {
        f"{registry.host}/{ns}/base:2.0.1": registry.manifest_digest(f"{ns}/base", "2.0.1"),
        f"{registry.host}/{ns}/tools/app:2.0.1": registry.manifest_digest(f"{ns}/tools/app", "2.0.1"),
    }
    assert all(pushed.values())
    outputs = parse_github_output(output.read_text())
    assert json.loads(outputs["digests"]) == pushed
    assert sorted(json.loads(outputs["tags"])) == sorted(pushed)
    assert outputs["base-digest"] == pushed[f"{registry.host}/{ns}/base:2.0.1"]
    assert outputs["tools_app-digest"] == pushed[f"{registry.host}/{ns}/tools/app:2.0.1"]
    assert "broken-digest" not in outputs

    markdown = summary.read_text()
    assert "| Image | Tags | Digest | Size | Result |" in markdown
    assert "| broken |" in markdown and "**failed** (build)" in markdown
    assert f"`{registry.host}/{ns}/base:latest` (held back)" in markdown
    assert "Floating tags held back" in markdown
