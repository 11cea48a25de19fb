"""max_size, `imgctl history` and `imgctl plan --matrix` on the real engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import unique, write_base_context, write_context
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine


def test_max_size_fails_the_image_before_any_push(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base", "RUN head -c 3000000 /dev/urandom > /blob\n")
    write_base_context(tmp_path / "small")
    config = tmp_path / "imgctl.yaml"
    config.write_text(yaml.safe_dump({"registry": registry.host, "namespace": ns, "images": [
        {"name": "base", "context": "base", "max_size": "4MB"},
        {"name": "small", "context": "small", "max_size": "4MB"},
    ]}))
    run = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert run.code == 1, run.output
    assert "base | FAILED (size): image is 5.0MB, over its max_size of 4.0MB" in run.stderr
    assert registry.tags(f"{ns}/base") == []
    assert registry.tags(f"{ns}/small") == ["1.0.0"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"registry": registry.host, "namespace": ns,
                                   "images": [{"name": "base", "context": "base", "max_size": "lots"}]}))
    refused = imgctl("validate", "-c", str(bad))
    assert refused.code == 2 and "images[0].max_size" in refused.stderr


@pytest.mark.builder("classic")
def test_history_shows_layers_and_the_instruction_that_made_them(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base", 'RUN echo hi > /hello\n')
    config = tmp_path / "imgctl.yaml"
    config.write_text(yaml.safe_dump({"registry": registry.host, "namespace": ns,
                                      "images": [{"name": "base", "context": "base", "tags": ["{version}", "latest"]}]}))
    assert imgctl("release", "-c", str(config), "--version", "1.0.0", "--no-push").code == 0
    shown = imgctl("history", "base", "-c", str(config))
    assert shown.code == 0, shown.output
    assert shown.stdout.startswith(f"{registry.host}/{ns}/base:latest: ")
    assert "echo hi > /hello" in shown.stdout
    assert "2.0MB  COPY file:" in shown.stdout
    missing = imgctl("history", "no-such/image:1")
    assert missing.code == 1 and "no local image no-such/image:1" in missing.stderr


def test_plan_matrix_groups_images_that_build_apart(tmp_path: Path, imgctl) -> None:  # type: ignore[no-untyped-def]
    for name in ("a", "b", "solo"):
        write_base_context(tmp_path / name)
    write_context(tmp_path / "c", "ARG B\nFROM ${B}\n")
    config = tmp_path / "imgctl.yaml"
    config.write_text(yaml.safe_dump({"registry": "127.0.0.1:9", "namespace": "ns", "images": [
        {"name": "a", "context": "a"}, {"name": "b", "context": "b", "depends_on": ["a"]},
        {"name": "c", "context": "c", "build_args": {"B": "{registry}/{namespace}/b:{version}"}},
        {"name": "solo", "context": "solo"},
    ]}))
    run = imgctl("plan", "-c", str(config), "--version", "1.0.0", "--matrix")
    assert run.code == 0, run.output
    assert json.loads(run.stdout) == {"include": [
        {"group": "a", "images": "a b c", "only": "--only a --only b --only c"},
        {"group": "solo", "images": "solo", "only": "--only solo"},
    ]}
