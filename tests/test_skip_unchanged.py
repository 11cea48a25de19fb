"""--skip-unchanged: no build and no push for images whose inputs the registry already holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import AUTH_PASSWORD, AUTH_USER, chain_config, unique
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine


def write_graph(tmp_path: Path, host: str, ns: str, **top: object) -> Path:
    config = chain_config(tmp_path, host, ns, {"app": "COPY app.txt /app.txt\n", "tool": "RUN echo tool > /tool\n"}, **top)
    (tmp_path / "app" / "app.txt").write_text("one")
    return config


def built(run) -> set[str]:  # type: ignore[no-untyped-def]
    return {e["image"] for e in run.of_type("build_step")}


def pushed(run) -> set[str]:  # type: ignore[no-untyped-def]
    return {e["image"] for e in run.of_type("push_started")}


def test_unchanged_images_are_neither_built_nor_pushed(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = write_graph(tmp_path, registry.host, ns)
    args = ("release", "-c", str(config), "--skip-unchanged", "--output", "json")
    first = imgctl(*args, "--version", "1.0.0")
    assert first.code == 0, first.output
    assert built(first) == {"base", "app", "tool"}

    again = imgctl(*args, "--version", "1.0.0")
    assert again.code == 0, again.output
    assert built(again) == set() and pushed(again) == set(), again.stderr[-3000:]
    assert {e["image"] for e in again.of_type("reused")} == {"base", "app", "tool"}
    assert {t["status"] for row in again.of_type("summary")[0]["images"] for t in row["tags"]} == {"unchanged"}

    # a new version: base's inputs are the same, so its new tags are added in the registry without a
    # build or a push; app and tool take the version in a build arg, so their inputs changed
    bumped = imgctl(*args, "--version", "1.0.1")
    assert bumped.code == 0, bumped.output
    assert built(bumped) == {"app", "tool"} and pushed(bumped) == {"app", "tool"}
    for name in ("base",):
        assert registry.manifest_digest(f"{ns}/{name}", "1.0.1") == registry.manifest_digest(f"{ns}/{name}", "1.0.0")
        assert registry.manifest_digest(f"{ns}/{name}", "latest") == registry.manifest_digest(f"{ns}/{name}", "1.0.0")

    # a changed file rebuilds its image and everything built FROM it, not what it is built FROM
    (tmp_path / "app" / "app.txt").write_text("two")
    changed = imgctl(*args, "--version", "1.0.1")
    assert changed.code == 0, changed.output
    assert built(changed) == {"app", "tool"}
    assert registry.manifest_digest(f"{ns}/app", "1.0.1") != registry.manifest_digest(f"{ns}/app", "1.0.0")
    assert registry.manifest_digest(f"{ns}/tool", "1.0.1") != registry.manifest_digest(f"{ns}/tool", "1.0.0")


def test_nightly_reuses_an_unchanged_graph(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Built FROM floating tags, an unchanged graph is reused whole: this is what makes nightlies cheap."""
    ns = unique()
    config = write_graph(tmp_path, registry.host, ns)
    data = yaml.safe_load(config.read_text())
    for image in data["images"][1:]:
        image["build_args"]["B"] = image["build_args"]["B"].replace("{version}", "nightly")
    data["nightly_cache"] = True
    config.write_text(yaml.safe_dump(data))
    first = imgctl("release", "-c", str(config), "--nightly", "--skip-unchanged", "--output", "json")
    assert first.code == 0, first.output
    assert built(first) == {"base", "app", "tool"}
    second = imgctl("release", "-c", str(config), "--nightly", "--skip-unchanged", "--output", "json")
    assert second.code == 0, second.output
    assert built(second) == set() and pushed(second) == set()


def test_changed_build_arg_rebuilds(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = write_graph(tmp_path, registry.host, ns)
    assert imgctl("release", "-c", str(config), "--skip-unchanged", "--version", "1.0.0").code == 0
    data = yaml.safe_load(config.read_text())
    data["images"][2]["build_args"]["EXTRA"] = "x"
    config.write_text(yaml.safe_dump(data))
    run = imgctl("release", "-c", str(config), "--skip-unchanged", "--version", "1.0.0", "--output", "json")
    assert run.code == 0, run.output
    assert built(run) == {"tool"}


def test_retagging_works_on_an_htpasswd_registry(tmp_path: Path, auth_registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = write_graph(tmp_path, auth_registry.host, ns, auth={"username_env": "U", "password_env": "P"})
    env = {"U": AUTH_USER, "P": AUTH_PASSWORD}
    assert imgctl("release", "-c", str(config), "--skip-unchanged", "--version", "1.0.0", env=env).code == 0
    run = imgctl("release", "-c", str(config), "--skip-unchanged", "--version", "1.1.0", "--output", "json", env=env)
    assert run.code == 0, run.output
    # base is reused (re-tagged in the registry); app and tool build FROM it, pulled with the credentials
    assert built(run) == {"app", "tool"}
    assert auth_registry.manifest_digest(f"{ns}/base", "1.1.0") == auth_registry.manifest_digest(f"{ns}/base", "1.0.0")
    assert auth_registry.manifest_digest(f"{ns}/tool", "1.1.0") is not None
    assert AUTH_PASSWORD not in run.output
