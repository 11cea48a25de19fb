"""`--builder buildkit`: BuildKit's recorded streams through the parser, then real releases."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgctl.buildkit import BuildKitStreamParser, decode_status
from imgctl.errors import BuildFailed
from imgctl.events import BuildOutput, BuildStep, Event
from imgctl.streams import JsonStreamDecoder
from tests.conftest import AUTH_PASSWORD, AUTH_USER, chain_config, unique, write_base_context, write_config, write_context
from tests.support.registry import RegistryServer

STREAMS = Path(__file__).parent / "fixtures" / "streams"


@cache
def recording(name: str) -> tuple[dict[str, Any], bytes]:
    header, *lines = (STREAMS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    chunks = [json.loads(line) for line in lines]
    body = b"".join(c["text"].encode("utf-8") if "text" in c else base64.b64decode(c["b64"]) for c in chunks)
    return json.loads(header), body


def replay(body: bytes, pieces: list[int] | None = None) -> tuple[list[Event], BuildKitStreamParser]:
    """The body fed in pieces of the given sizes (whole, by default)."""
    decoder, parser, events = JsonStreamDecoder(), BuildKitStreamParser("app"), []
    sizes, start = list(pieces or []), 0
    while start < len(body):
        end = start + sizes.pop(0) if sizes else len(body)
        for record in decoder.feed(body[start:end]):
            events.extend(parser.handle(record))
        start = end
    for record in decoder.close():
        events.extend(parser.handle(record))
    return events, parser


def shown(events: list[Event]) -> list[str]:
    return [e.line for e in events if isinstance(e, BuildOutput) and not e.internal]


def test_a_recorded_build_gives_steps_output_and_the_image_id() -> None:
    header, body = recording("buildkit_ok")
    events, parser = replay(body)
    done, image_id = parser.finish()
    assert image_id == header["image_id"]
    steps = [(e.step, e.total, e.instruction) for e in events if isinstance(e, BuildStep)]
    assert steps[0] == (1, 5, "COPY busybox /bin/busybox")  # FROM, ARG, LABEL... run no step in BuildKit
    assert [s[0] for s in steps] == [1, 2, 3, 4, 5]
    lines = shown(events + done)
    assert lines[:4] == ["line-one", "line-two", "héllo wörld ✓ 日本", "line-four"]
    # a line with no end is ended when its step completes; `\r` progress keeps its last state
    assert lines[4:] == ["no-newline-at-end", "progress done", "after-progress"]


def test_a_recorded_failure_names_the_step_and_keeps_the_output() -> None:
    _, body = recording("buildkit_run_fails")
    events, parser = replay(body)
    assert "never-reached" not in shown(events)
    with pytest.raises(BuildFailed) as failed:
        parser.finish()
    assert "failed at [3/4] RUN echo before-fail && false: " in failed.value.message
    assert "exit code: 1" in failed.value.message
    assert failed.value.output == ("before-fail",)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=700), max_size=60))
def test_any_chunking_gives_the_same_events(pieces: list[int]) -> None:
    _, body = recording("buildkit_ok")
    whole, _ = replay(body)
    cut, parser = replay(body, pieces)
    assert [(type(e), e.__dict__ | {"time": 0}) for e in cut] == [(type(e), e.__dict__ | {"time": 0}) for e in whole]
    assert parser.image_id


def test_garbage_progress_is_ignored_and_bad_protobuf_refused() -> None:
    parser = BuildKitStreamParser("app")
    assert parser.handle({"id": "moby.buildkit.trace", "aux": "not base64 !"}) == []
    assert parser.handle({"id": "moby.buildkit.trace", "aux": base64.b64encode(b"\x0a\x05ab").decode()}) == []
    with pytest.raises(ValueError):
        decode_status(b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")  # a length past the end
    with pytest.raises(BuildFailed, match="without an image id"):
        parser.finish()


# -- real releases ---------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.builder("buildkit")
def test_release_with_buildkit(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """A chain built by BuildKit: pushed, verified, labelled and runnable; COPY sees the context a
    plain build sees (the labels go as build labels, no copy of the Dockerfile, no .dockerignore
    added); a first file whose tar header needs PAX (a name over 100 bytes) does not make BuildKit
    read the whole context as a Dockerfile."""
    ns = unique()
    config = chain_config(tmp_path, registry.host, ns, {
        "app": "COPY . /app\nRUN echo built-by-buildkit && ls -a /app\nCMD [\"ls\", \"-a\", \"/app\"]\n",
    })
    long_name = "0-" + "a" * 120 + ".txt"
    (tmp_path / "app" / long_name).write_text("first in the tar, PAX header\n")
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--builder", "buildkit", "--no-cache", "--output", "json")
    assert run.code == 0, run.output
    assert "built-by-buildkit" in [e["line"] for e in run.of_type("build_output")]
    steps = [(e["step"], e["total"], e["instruction"].split()[0]) for e in run.of_type("build_step") if e["image"] == "app"]
    assert steps == [(1, 3, "FROM"), (2, 3, "COPY"), (3, 3, "RUN")]
    for name in ("base", "app"):
        assert registry.manifest_digest(f"{ns}/{name}", "1.0.0") is not None
        assert registry.manifest_digest(f"{ns}/{name}", "latest") is not None
    ref = f"{registry.host}/{ns}/app:1.0.0"
    labels = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .Config.Labels}}", ref],
                                       capture_output=True, text=True, check=True).stdout)
    assert labels["io.imgctl.inputs"].startswith("sha256:") and labels["org.opencontainers.image.version"] == "1.0.0"
    listed = subprocess.run(["docker", "run", "--rm", "--network", "none", ref], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(listed) == sorted([".", "..", "Dockerfile", long_name])
    # built again: BuildKit takes every step from its cache, and the plain output says so per step
    again = imgctl("release", "-c", str(config), "--version", "1.0.0", "--builder", "buildkit", "--no-push")
    assert again.code == 0, again.output
    assert re.search(r"^app \| Step 3/3 : RUN echo built-by-buildkit.*\napp \| CACHED$", again.stderr, re.M), again.stderr


@pytest.mark.engine
@pytest.mark.builder("buildkit")
def test_a_failing_buildkit_step_fails_the_image(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Chosen by the config's `builder` this time."""
    write_base_context(tmp_path / "base", "RUN echo before-fail && false\n")
    config = write_config(tmp_path, {"registry": registry.host, "namespace": unique(), "builder": "buildkit",
                                     "images": [{"name": "base", "context": "base"}]})
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--no-cache", "--output", "json")
    assert run.code == 1, run.output
    failed = run.of_type("image_failed")
    assert [(e["image"], e["stage"]) for e in failed] == [("base", "build")]
    assert "RUN echo before-fail && false" in failed[0]["error"] and "exit code: 1" in failed[0]["error"]
    assert "before-fail" in failed[0]["output"]
    assert run.of_type("build_step")[0]["instruction"] == "COPY busybox /bin/busybox"  # BuildKit: FROM scratch is no step


@pytest.mark.engine
@pytest.mark.builder("buildkit")
def test_a_base_behind_credentials_comes_through_the_session(tmp_path: Path, auth_registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """BuildKit pulls a missing base itself, asking imgctl's session for the credentials (the
    config's, from the environment it names); with none to give, the registry's refusal shows."""
    host, ns = auth_registry.host, unique()
    top = {"registry": host, "namespace": ns, "auth": {"username_env": "REG_USER", "password_env": "REG_TOKEN"}}
    env = {"REG_USER": AUTH_USER, "REG_TOKEN": AUTH_PASSWORD}
    write_base_context(tmp_path / "base")
    (tmp_path / "base.yaml").write_text(json.dumps({**top, "images": [{"name": "base", "context": "base"}]}))
    released = imgctl("release", "-c", str(tmp_path / "base.yaml"), "--version", "1.0.0", env=env)
    assert released.code == 0, released.output

    def forget_base() -> None:
        subprocess.run(["docker", "rmi", "-f", f"{host}/{ns}/base:1.0.0", f"{host}/{ns}/base:latest"], capture_output=True)

    forget_base()
    write_context(tmp_path / "app", f"FROM {host}/{ns}/base:1.0.0\nRUN echo on-the-pulled-base\n")
    config = write_config(tmp_path, {**top, "images": [{"name": "app", "context": "app", "tags": ["{version}"]}]})
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--builder", "buildkit", "--no-cache", env=env)
    assert run.code == 0, run.output
    assert "on-the-pulled-base" in run.output
    assert auth_registry.manifest_digest(f"{ns}/app", "1.0.0") is not None
    forget_base()
    other = write_config(tmp_path, {"registry": host, "namespace": ns, "images": [{"name": "app", "context": "app", "tags": ["{version}"]}]})
    anonymous = imgctl("release", "-c", str(other), "--version", "1.0.1", "--builder", "buildkit", "--no-cache", "--no-push")
    assert anonymous.code == 1 and "401 Unauthorized" in anonymous.output, anonymous.output
    assert AUTH_PASSWORD not in run.output + anonymous.output


@pytest.mark.engine
@pytest.mark.builder("buildkit")
def test_a_dockerfile_buildkit_cannot_read_fails_with_its_words(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    write_base_context(tmp_path / "base", "FROBNICATE the-widget\n")
    config = write_config(tmp_path, {"registry": registry.host, "namespace": unique(), "images": [{"name": "base", "context": "base"}]})
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--builder", "buildkit", "--output", "json")
    assert run.code == 1, run.output
    failed = run.of_type("image_failed")
    assert [(e["image"], e["stage"]) for e in failed] == [("base", "build")]
    assert "unknown instruction: FROBNICATE" in failed[0]["error"], failed[0]["error"]
    assert "Traceback" not in run.output


@pytest.mark.engine
@pytest.mark.builder("buildkit")
def test_an_interrupt_cancels_a_running_buildkit_build(tmp_path: Path, registry: RegistryServer, docker_config: Path) -> None:
    """SIGINT during a long RUN: BuildKit's build is cancelled (/build/cancel), not waited for."""
    import os
    import signal
    import sys
    import time

    ns = unique()
    config = chain_config(tmp_path, registry.host, ns, {"slow": 'RUN echo "slow step starts" && sleep 60 && echo "slow step ends"\n'})
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgctl", "release", "-c", str(config), "--version", "1.0.0", "--builder", "buildkit",
         "--no-cache"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "slow step starts" in line:
            break
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=50)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - interrupted < 30  # a correctness bound: the 60 s step was not waited for
    assert "context canceled" in stderr and "Traceback" not in stderr
    assert not re.search(r"^slow \| slow step ends$", stderr, re.M)  # the step's last line never ran
    assert registry.tags(f"{ns}/slow") == [] and registry.tags(f"{ns}/base") == ["1.0.0"]
