"""--skip-unchanged: no build and no push for images whose inputs the registry already holds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import AUTH_PASSWORD, AUTH_USER, chain_config, unique, write_base_context, write_config, write_context
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

    # a new version with nothing changed: every image is reused, though app and tool name their
    # base through a build arg holding the version, since the arg counts as the image it names
    logged = len(registry.log_text())
    bumped = imgctl(*args, "--version", "1.0.1")
    assert bumped.code == 0, bumped.output
    assert built(bumped) == set() and pushed(bumped) == set(), bumped.stderr[-3000:]
    # each new tag is one manifest PUT: the manifest read to compare inputs is the one it sends
    requests = [line for line in registry.log_text()[logged:].splitlines() if '"imgctl/' in line]
    assert sum('"PUT /v2/' in line and "/manifests/1.0.1 " in line for line in requests) == 3, requests
    assert not [line for line in requests if '"GET /v2/' in line and "/manifests/sha256:" in line], requests
    # and each manifest is read once: 1.0.1 (absent) and latest (the inputs to compare, then its size)
    assert sum('"GET /v2/' in line and "/manifests/" in line for line in requests) == 6, requests
    assert {e["image"] for e in bumped.of_type("reused")} == {"base", "app", "tool"}
    for name in ("base", "app", "tool"):
        assert registry.manifest_digest(f"{ns}/{name}", "1.0.1") == registry.manifest_digest(f"{ns}/{name}", "1.0.0")
        assert registry.manifest_digest(f"{ns}/{name}", "latest") == registry.manifest_digest(f"{ns}/{name}", "1.0.0")

    # a changed file rebuilds its image and everything built FROM it, not what it is built FROM
    (tmp_path / "app" / "app.txt").write_text("two")
    changed = imgctl(*args, "--version", "1.0.2")
    assert changed.code == 0, changed.output
    assert built(changed) == {"app", "tool"}
    assert {e["image"] for e in changed.of_type("reused")} == {"base"}
    assert registry.manifest_digest(f"{ns}/app", "1.0.2") != registry.manifest_digest(f"{ns}/app", "1.0.0")
    assert registry.manifest_digest(f"{ns}/tool", "1.0.2") != registry.manifest_digest(f"{ns}/tool", "1.0.0")


def test_a_changed_external_base_rebuilds(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """A base from outside the config counts as what its registry holds now, not as its name."""
    ns = unique()
    external = f"{registry.host}/{ns}/upstream:3"

    def publish_upstream(content: str) -> None:
        write_base_context(tmp_path / "upstream", f"RUN echo {content} > /upstream\n")
        subprocess.run(["docker", "build", "-q", "-t", external, str(tmp_path / "upstream")], check=True, capture_output=True)
        subprocess.run(["docker", "push", "-q", external], check=True, capture_output=True)

    publish_upstream("one")
    write_context(tmp_path / "app", f"FROM {external}\nRUN echo app > /app\n")
    config = write_config(tmp_path, {"registry": registry.host, "namespace": ns,
                                     "images": [{"name": "app", "context": "app", "tags": ["{version}", "latest"]}]})
    args = ("release", "-c", str(config), "--skip-unchanged", "--output", "json")
    assert built(imgctl(*args, "--version", "1.0.0")) == {"app"}
    assert built(imgctl(*args, "--version", "1.0.1")) == set()  # upstream unchanged: reused
    subprocess.run(["docker", "rmi", external], capture_output=True)  # a fresh runner has no local copy
    assert built(imgctl(*args, "--version", "1.0.2")) == set()
    publish_upstream("two")  # upstream moved: rebuilt, FROM the new one
    moved = imgctl(*args, "--version", "1.0.3", "--pull")
    assert built(moved) == {"app"}, moved.output


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
    (tmp_path / "app" / "app.txt").write_text("two")  # app changes; base does not
    subprocess.run(f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep '^{auth_registry.host}/{ns}/base:' "
                   "| xargs -r docker rmi -f", shell=True, capture_output=True)  # as on a fresh runner
    run = imgctl("release", "-c", str(config), "--skip-unchanged", "--version", "1.1.0", "--output", "json", env=env)
    assert run.code == 0, run.output
    # base is reused (re-tagged in the registry); app and tool build FROM it, pulled with the credentials
    assert built(run) == {"app", "tool"}
    assert auth_registry.manifest_digest(f"{ns}/base", "1.1.0") == auth_registry.manifest_digest(f"{ns}/base", "1.0.0")
    assert auth_registry.manifest_digest(f"{ns}/tool", "1.1.0") is not None
    assert AUTH_PASSWORD not in run.output


def test_a_cached_re_release_keeps_the_local_images(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Released again with the cache allowed, an image whose local build carries exactly the labels
    and inputs digest this build would give is that build: kept, not built again. A changed file,
    a new version (its label) or --no-cache builds."""
    ns = unique()
    config = write_graph(tmp_path, registry.host, ns)
    args = ("release", "-c", str(config), "--output", "json")
    # the created label is the commit's time, or SOURCE_DATE_EPOCH; outside git, without it, "now"
    # gives every run other labels, and so a build of its own
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = imgctl(*args, "--version", "1.0.0", env=env)
    assert first.code == 0, first.output
    ids = {e["image"]: e["image_id"] for e in first.of_type("build_done")}

    again = imgctl(*args, "--version", "1.0.0", env=env)
    assert again.code == 0, again.output
    assert built(again) == set(), again.stderr[-3000:]  # no build step ran, cached or not
    assert {e["image"]: e["image_id"] for e in again.of_type("build_done")} == ids
    assert {e["image"] for e in again.of_type("build_output") if "built from these very inputs" in e["line"]} == set(ids)
    assert {t["status"] for row in again.of_type("summary")[0]["images"] for t in row["tags"]} == {"unchanged"}

    (tmp_path / "app" / "app.txt").write_text("changed")
    changed = imgctl(*args, "--version", "1.0.0", env=env)
    assert changed.code == 0, changed.output
    assert built(changed) == {"app", "tool"}  # base kept; app and what is built FROM it build
    assert imgctl(*args, "--version", "1.0.0").of_type("build_step")  # other labels: built

    assert built(imgctl(*args, "--version", "1.0.1", env=env)) == {"base", "app", "tool"}  # the version label moved
    assert built(imgctl(*args, "--version", "1.0.1", "--no-cache", env=env)) == {"base", "app", "tool"}
