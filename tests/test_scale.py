"""A 100-image release on the real engine and registry: 3 levels, 3 tags each.

What a monorepo's nightly run counts on: the cold release puts all 300 tags in the registry,
each confirmed; a new version with nothing changed builds and pushes nothing, yet every new tag
is there; one changed mid-level image rebuilds exactly itself and the images built FROM it. One
builder only (BuildKit, the default): the mechanics tested here do not depend on it, and the
suite's time does. bench/scale.py measures the same workload against the docker CLI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unique, write_base_context, write_config, write_context
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.engine, pytest.mark.builder("buildkit")]

MIDS = 9
LEAVES = 90
TAGS = ["{version}", "{major}.{minor}", "latest"]


def write_monorepo(tmp_path: Path, host: str, ns: str) -> tuple[Path, dict[str, str]]:
    """base FROM scratch, MIDS images FROM it, LEAVES images FROM those; each its own context
    with a file of its own. Returns the config and each image's base."""
    write_base_context(tmp_path / "base")
    base_of = {**{f"mid{i}": "base" for i in range(MIDS)}, **{f"leaf{i:02d}": f"mid{i % MIDS}" for i in range(LEAVES)}}
    entries: list[dict[str, Any]] = [{"name": "base", "context": "base", "tags": TAGS}]
    for name, base in base_of.items():
        context = write_context(tmp_path / name, "ARG B\nFROM ${B}\nCOPY name.txt /name.txt\n")
        (context / "name.txt").write_text(name)
        entries.append({"name": name, "context": name, "tags": TAGS,
                        "build_args": {"B": f"{{registry}}/{{namespace}}/{base}:{{version}}"}})
    return write_config(tmp_path, {"registry": host, "namespace": ns, "images": entries}), base_of


def local(reference: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", reference], capture_output=True).returncode == 0


def test_a_hundred_images(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config, base_of = write_monorepo(tmp_path, registry.host, ns)
    names = ["base", *base_of]
    assert len(names) == 100
    args = ("release", "-c", str(config), "--skip-unchanged", "--output", "json")

    cold = imgctl(*args, "--version", "2.0.0", timeout=600)
    assert cold.code == 0, cold.stderr[-3000:]
    verified = {e["reference"]: e["digest"] for e in cold.of_type("verified")}
    assert len(verified) == 300
    for name in names:
        digests = {registry.manifest_digest(f"{ns}/{name}", tag) for tag in ("2.0.0", "2.0", "latest")}
        assert digests == {verified[f"{registry.host}/{ns}/{name}:2.0.0"]}, name

    bumped = imgctl(*args, "--version", "2.0.1", timeout=600)
    assert bumped.code == 0, bumped.stderr[-3000:]
    assert not bumped.of_type("build_step") and not bumped.of_type("push_started")
    assert {e["image"] for e in bumped.of_type("reused")} == set(names)
    for name in names:
        assert registry.manifest_digest(f"{ns}/{name}", "2.0.1") == verified[f"{registry.host}/{ns}/{name}:2.0.0"]
    # nothing was pulled either: an image reused needs no copy of its base
    assert not [name for name in ("base", "mid0", "mid8") if local(f"{registry.host}/{ns}/{name}:2.0.1")]

    (tmp_path / "mid4" / "name.txt").write_text("mid4, changed")
    changed = imgctl(*args, "--version", "2.0.2", timeout=600)
    assert changed.code == 0, changed.stderr[-3000:]
    subtree = {"mid4", *(name for name, base in base_of.items() if base == "mid4")}
    assert {e["image"] for e in changed.of_type("build_done")} == subtree
    assert {e["image"] for e in changed.of_type("reused")} == set(names) - subtree
    # the one reused base that a build needed was pulled for it; the others were not
    assert local(f"{registry.host}/{ns}/base:2.0.2") and not local(f"{registry.host}/{ns}/mid3:2.0.2")
    for name in names:
        moved = registry.manifest_digest(f"{ns}/{name}", "latest") != verified[f"{registry.host}/{ns}/{name}:2.0.0"]
        assert moved == (name in subtree), name
