"""Bad build contexts through the real CLI and engine: a clear message, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import unique, write_base_context
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine


def one_image(tmp_path: Path, host: str, **image: object) -> Path:
    config = tmp_path / "imgctl.yaml"
    config.write_text(yaml.safe_dump({"registry": host, "namespace": unique(),
                                      "images": [{"name": "base", "context": "base", **image}]}))
    return config


def test_dockerignore_that_excludes_the_dockerfile_still_builds(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    context = write_base_context(tmp_path / "base", "COPY . /ctx/\n")
    (context / ".dockerignore").write_text("Dockerfile\n*.tmp\n")
    (context / "kept.txt").write_text("kept")
    (context / "dropped.tmp").write_text("dropped")
    run = imgctl("release", "-c", str(one_image(tmp_path, registry.host)), "--version", "1.0.0", "--no-push")
    assert run.code == 0, run.output


def test_symlink_loop_in_the_context_is_sent_as_links_like_the_cli(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    context = write_base_context(tmp_path / "base")
    os.symlink("b", context / "a")
    os.symlink("a", context / "b")
    run = imgctl("release", "-c", str(one_image(tmp_path, registry.host)), "--version", "1.0.0", "--no-push")
    assert run.code == 0, run.output


def test_dockerfile_that_is_a_symlink_loop_is_refused(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    context = write_base_context(tmp_path / "base")
    os.symlink("Other", context / "Loop")
    os.symlink("Loop", context / "Other")
    run = imgctl("release", "-c", str(one_image(tmp_path, registry.host, dockerfile="Loop")), "--version", "1.0.0")
    assert run.code == 2, run.output
    assert "images[0].dockerfile" in run.stderr and "Traceback" not in run.output


def test_unreadable_file_fails_the_build_naming_it(tmp_path: Path, registry: RegistryServer, docker_config: Path) -> None:
    context = write_base_context(tmp_path / "base")
    secret = context / "private.key"
    secret.write_text("x")
    secret.chmod(0)
    command = [sys.executable, "-m", "imgctl", "release", "-c", str(one_image(tmp_path, registry.host)),
               "--version", "1.0.0", "--no-push"]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it ignore file modes
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux's setpriv is needed to make a file unreadable for root"
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DOCKER_CONFIG": str(docker_config)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "private.key" in done.stderr and "Permission denied" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
