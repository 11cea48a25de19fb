"""A registry's pull limit during `--pull`, as Docker Hub answers it (429 `toomanyrequests` with
`ratelimit-*` headers), played by the fault proxy in front of a real registry."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgctl.auth import Credentials
from imgctl.registry import PullLimit
from imgctl.pulls import limit_message
from tests.conftest import unique, write_base_context, write_config, write_context
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.registry import RegistryServer

LIMIT_HEADERS = (("ratelimit-limit", "100;w=21600"), ("ratelimit-remaining", "0;w=21600"))


@pytest.fixture
def external_base(tmp_path: Path, registry: RegistryServer) -> Iterator[tuple[FaultProxy, str]]:
    """A base image that the config does not build, in a registry reached through the fault
    proxy, and present locally under that name (so a build can go on without the pull)."""
    write_base_context(tmp_path / "bb")
    built = subprocess.run(["docker", "build", "-q", str(tmp_path / "bb")], capture_output=True, text=True, check=True)
    image_id = built.stdout.strip()
    with FaultProxy(registry.host) as proxy:
        base = f"{proxy.host}/{unique()}/bb:1"
        subprocess.run(["docker", "tag", image_id, base], check=True)
        subprocess.run(["docker", "push", "-q", base], check=True, capture_output=True)
        yield proxy, base
        subprocess.run(["docker", "rmi", base], capture_output=True)


def _config(tmp_path: Path, registry: RegistryServer, base: str) -> Path:
    write_context(tmp_path / "app", f"FROM {base}\nRUN echo app > /app\n")
    return write_config(tmp_path, {"registry": registry.host, "namespace": unique(),
                                   "images": [{"name": "app", "context": "app", "tags": ["{version}"]}]})


@pytest.mark.engine
def test_a_pull_limit_with_retry_after_is_waited_out(tmp_path: Path, registry: RegistryServer, external_base, imgctl) -> None:  # type: ignore[no-untyped-def]
    proxy, base = external_base
    # the engine's HEAD and GET of the manifest, then imgctl's HEAD for the figures
    rule = proxy.add_rule(Rule(None, r"/manifests/", "status", count=3, status=429, retry_after=2, headers=LIMIT_HEADERS))
    run = imgctl("release", "-c", str(_config(tmp_path, registry, base)), "--version", "1.0.0", "--pull", "--output", "json")
    assert run.code == 0, run.output
    assert proxy.fired(rule) == 3
    retries = [e for e in run.of_type("retrying") if e["action"] == f"pull {base}"]
    assert len(retries) == 1 and retries[0]["wait"] >= 2, run.output
    assert "0 of 100 pulls left per 6 h" in retries[0]["reason"]
    assert not run.of_type("warning"), run.output  # pulled the second time
    assert [h.status for h in proxy.hits if "/manifests/" in h.path][-1] == 200


@pytest.mark.engine
def test_a_pull_limit_without_retry_after_is_reported_not_retried(tmp_path: Path, registry: RegistryServer, external_base, imgctl) -> None:  # type: ignore[no-untyped-def]
    proxy, base = external_base
    proxy.add_rule(Rule(None, r"/manifests/", "status", count=100, status=429, headers=LIMIT_HEADERS))
    run = imgctl("release", "-c", str(_config(tmp_path, registry, base)), "--version", "1.0.0", "--pull", "--output", "json")
    assert run.code == 0, run.output  # the build goes on with the local base
    assert not run.of_type("retrying")
    [warning] = run.of_type("warning")
    assert warning["message"] == (
        f"could not refresh base image {base}: the pull limit of registry {proxy.host}: 0 of 100 pulls left per 6 h; "
        "log in (`docker login`, or auth in imgctl's config) to raise it"
    )


def test_docker_hub_limit_wording() -> None:
    limit = PullLimit("100;w=21600", "0;w=21600", None)
    assert limit_message("docker.io", limit, None) == (
        "Docker Hub's pull limit: 0 of 100 pulls left per 6 h; log in (`docker login`, or auth in imgctl's config) to raise it"
    )
    assert limit_message("registry-1.docker.io", PullLimit(None, None, None), Credentials("ci", "x" * 8, "test")) == (
        "Docker Hub's pull limit; 'ci' has used its pulls; a paid plan raises the limit"
    )
