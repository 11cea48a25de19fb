"""Labels in one LABEL step: the image gets exactly its labels, and the build sees exactly the
context a plain `docker build` of the folder sees (checked against the CLI on the real engine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BUSYBOX, unique, write_config
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine

# $, quotes, the escape characters and non-ASCII must all arrive verbatim
ODD = {"com.example.note": 'say "hi" to $USER \\ `now` – ünïcode', "com.example.plain": "x"}

COPYING = "FROM scratch\nCOPY busybox /bin/busybox\nCOPY . /app\n"


def _inspect(reference: str) -> tuple[dict[str, str], list[str]]:
    """(labels, history lines newest first) of a local image."""
    labels = subprocess.run(
        ["docker", "image", "inspect", reference, "--format", "{{json .Config.Labels}}"],
        capture_output=True, text=True, check=True,
    ).stdout
    history = subprocess.run(
        ["docker", "history", reference, "--no-trunc", "--format", "{{.CreatedBy}}"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    return json.loads(labels), history


def _cli_build(context: Path, tag: str, target: str | None = None) -> list[str]:
    """The history of the classic builder's build of the folder, by the docker CLI."""
    command = ["docker", "build", "-q", "-t", tag, *(["--target", target] if target else []), str(context)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert done.returncode == 0, done.stderr
    return _inspect(tag)[1]


def _context(folder: Path, dockerfile: str, ignore: str | None) -> Path:
    folder.mkdir()
    shutil.copy(BUSYBOX, folder / "busybox")
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / "notes.txt").write_text("kept\n")
    (folder / "debug.log").write_text("left out\n")
    if ignore is not None:
        (folder / ".dockerignore").write_text(ignore)
    return folder


@pytest.mark.parametrize(
    ("ignore", "folded"),
    [
        (None, True),  # imgctl sends a .dockerignore of its own, which the engine drops
        ("*.log\n", True),  # the copy is sent as imgctl.log, which the .dockerignore leaves out
        ("**/*.log\n", True),  # the same, as the engine's own matcher reads `**`
        ("debug.log\n.dockerignore\nDockerfile\n", True),  # no name to borrow: added to a .dockerignore the build never sees
        ("debug.log\n", False),  # neither: a COPY would see a changed .dockerignore, so build labels are used
    ],
)
@pytest.mark.builder("classic")
def test_labels_in_one_step_and_the_context_a_plain_build_sees(
    ignore: str | None, folded: bool, tmp_path: Path, registry: RegistryServer, imgctl
) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    _context(tmp_path / "app", COPYING, ignore)
    config = write_config(tmp_path, {
        "registry": registry.host, "namespace": ns, "images": [{"name": "app", "context": "app", "labels": ODD}],
    })
    run = imgctl("release", "-c", str(config), "--version", "2.0.0", "--no-push", "-o", "json")
    assert run.code == 0, run.output
    reference = f"{registry.host}/{ns}/app:2.0.0"
    labels, history = _inspect(reference)
    assert {k: labels[k] for k in ODD} == ODD
    assert labels["org.opencontainers.image.version"] == "2.0.0"
    label_steps = [line for line in history if "LABEL" in line]
    assert len(label_steps) == (1 if folded else len(labels)), history
    steps = [e["instruction"] for e in run.of_type("build_step")]
    assert steps[:3] == ["FROM scratch", "COPY busybox /bin/busybox", "COPY . /app"]
    assert len(steps) == (4 if folded else 3 + len(labels))
    # The COPY . step names a hash of the files it copied: the same as the CLI's build, so the
    # build saw the same files (no generated Dockerfile, no changed .dockerignore).
    cli = _cli_build(tmp_path / "app", f"{registry.host}/{ns}/cli:1")
    assert [line for line in history if "COPY dir:" in line] == [line for line in cli if "COPY dir:" in line]


@pytest.mark.builder("classic")
def test_labels_end_the_target_stage_and_keep_the_escape_directive(
    tmp_path: Path, registry: RegistryServer, imgctl
) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    dockerfile = (
        "# escape=`\n"
        "FROM scratch AS runtime\n"
        "COPY busybox /bin/busybox\n"
        "COPY notes.txt `\n"
        "     /notes.txt\n"
        "\n"
        "FROM runtime AS test\n"
        "RUN [\"/bin/busybox\", \"false\"]\n"  # would fail: must not be built
    )
    _context(tmp_path / "app", dockerfile, None)
    config = write_config(tmp_path, {
        "registry": registry.host, "namespace": ns,
        "images": [{"name": "app", "context": "app", "target": "runtime", "labels": ODD}],
    })
    run = imgctl("release", "-c", str(config), "--version", "2.0.0", "--no-push", "-o", "json")
    assert run.code == 0, run.output
    labels, history = _inspect(f"{registry.host}/{ns}/app:2.0.0")
    assert {k: labels[k] for k in ODD} == ODD
    assert len([line for line in history if "LABEL" in line]) == 1
    cli = _cli_build(tmp_path / "app", f"{registry.host}/{ns}/cli:1", target="runtime")
    assert [line for line in history if "COPY" in line] == [line for line in cli if "COPY" in line]
