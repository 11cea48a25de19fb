"""`imgctl release` against the real engine and real registries: what users count on."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import AUTH_PASSWORD, AUTH_USER, unique, write_base_context, write_context
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine

APP_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG GREETING
RUN echo "building with ${GREETING}" && mkdir -p /app && echo "${GREETING}" > /app/greeting
CMD ["cat", "/app/greeting"]
"""


def two_image_config(tmp_path: Path, host: str, namespace: str, **extra: object) -> Path:
    write_base_context(tmp_path / "base")
    write_context(tmp_path / "app", APP_DOCKERFILE)
    config = {
        "registry": host,
        "namespace": namespace,
        "images": [
            {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
            {
                "name": "app",
                "context": "app",
                "depends_on": ["base"],
                "build_args": {"BASE": "{registry}/{namespace}/base:{version}", "GREETING": "hello {version}"},
                "tags": ["{version}", "{major}.{minor}", "latest"],
            },
        ],
        **extra,
    }
    path = tmp_path / "imgctl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_image_release_is_pushed_verified_and_runs(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = two_image_config(tmp_path, registry.host, ns)
    # --no-cache: the RUN's output is checked below, and the same step of an earlier run on this
    # engine (same base content, same build arg) would be CACHED under BuildKit
    run = imgctl("release", "-c", str(config), "--version", "1.4.2", "--output", "json", "--no-cache")
    assert run.code == 0, run.output
    assert "Traceback" not in run.output

    pushed = {e["reference"]: e["digest"] for e in run.of_type("push_done") + run.of_type("tag_added")}
    expected = {
        f"{registry.host}/{ns}/base:1.4.2", f"{registry.host}/{ns}/base:latest",
        f"{registry.host}/{ns}/app:1.4.2", f"{registry.host}/{ns}/app:1.4", f"{registry.host}/{ns}/app:latest",
    }
    assert set(pushed) == expected
    # One push through the engine per image; its other tags are added to the manifest it pushed.
    assert {e["reference"] for e in run.of_type("push_done")} == {f"{registry.host}/{ns}/base:1.4.2", f"{registry.host}/{ns}/app:1.4.2"}
    for reference, digest in pushed.items():
        repo, tag = reference.removeprefix(registry.host + "/").rsplit(":", 1)
        assert registry.manifest_digest(repo, tag) == digest, reference
    assert sorted(registry.tags(f"{ns}/app")) == ["1.4", "1.4.2", "latest"]
    assert {e["reference"] for e in run.of_type("verified")} == expected

    # live build output: every step and the RUN's own line arrived as events
    lines = [e["line"] for e in run.of_type("build_output") if e["image"] == "app"]
    assert "building with hello 1.4.2" in lines
    assert any(e["instruction"].startswith("RUN echo") for e in run.of_type("build_step"))

    summary = run.of_type("summary")[0]
    assert summary["ok"] is True and summary["floating"] == "pushed"

    # every event line follows the published schema (`imgctl schema --events`)
    schema = json.loads(imgctl("schema", "--events").stdout)
    validator = jsonschema.Draft202012Validator(schema)
    for event in run.events():
        if event["type"] != "summary":
            validator.validate(event)
    assert {"build_step", "build_output", "push_done", "tag_added", "layer_progress", "verified"} <= {e["type"] for e in run.events()}

    # pull it back from the registry and run it
    ref = f"{registry.host}/{ns}/app:1.4.2"
    subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)
    subprocess.run(["docker", "pull", "-q", ref], check=True, capture_output=True)
    out = subprocess.run(["docker", "run", "--rm", ref], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hello 1.4.2"


@pytest.mark.builder("classic")
def test_plain_output_shows_progress_and_summary(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = two_image_config(tmp_path, registry.host, ns)
    run = imgctl("release", "-c", str(config), "--version", "2.0.0")
    assert run.code == 0, run.output
    assert "app | building with hello 2.0.0" in run.stderr
    assert "base | Step 3/" in run.stderr
    assert "layer " in run.stderr and "Pushed" in run.stderr
    digest = registry.manifest_digest(f"{ns}/app", "2.0.0")
    assert digest and digest in run.stdout
    assert "Release succeeded: 2/2 images done." in run.stdout
    assert "\x1b[" not in run.output  # no ANSI codes off a terminal


@pytest.mark.builder("classic")
def test_failing_run_exits_1_shows_output_and_moves_nothing(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base", 'RUN echo "about to fail: disk gremlins" && exit 3\n')
    write_context(tmp_path / "app", "ARG BASE\nFROM ${BASE}\n")
    write_base_context(tmp_path / "other")
    config = tmp_path / "imgctl.yaml"
    config.write_text(yaml.safe_dump({
        "registry": registry.host, "namespace": ns,
        "images": [
            {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
            {"name": "app", "context": "app", "build_args": {"BASE": "{registry}/{namespace}/base:{version}"},
             "tags": ["{version}", "latest"]},
            {"name": "other", "context": "other", "tags": ["{version}", "latest"]},
        ],
    }))
    run = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert run.code == 1, run.output
    assert "Traceback" not in run.output
    assert "about to fail: disk gremlins" in run.stderr
    assert "returned a non-zero code: 3" in run.output
    assert "Step 4/" in run.output  # the failing step is named
    assert "app | skipped: dependency base failed" in run.stderr
    assert registry.tags(f"{ns}/base") == [] and registry.tags(f"{ns}/app") == []
    # the independent image was released, but its floating tag held back: the release failed
    assert registry.tags(f"{ns}/other") == ["1.0.0"]
    assert "held back" in run.stdout


def test_htpasswd_registry_three_ways(tmp_path: Path, auth_registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = two_image_config(tmp_path, auth_registry.host, ns, auth={"username_env": "REG_USER", "password_env": "REG_TOKEN"})

    anonymous = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert anonymous.code == 1, anonymous.output
    assert f"registry {auth_registry.host} refused anonymous push" in anonymous.output
    assert "retry" not in anonymous.output.lower()

    wrong = imgctl("release", "-c", str(config), "--version", "1.0.0",
                   env={"REG_USER": AUTH_USER, "REG_TOKEN": "not-the-password-123"})
    assert wrong.code == 1, wrong.output
    assert f"registry {auth_registry.host} refused user '{AUTH_USER}'" in wrong.stderr
    assert "REG_USER/REG_TOKEN" in wrong.stderr
    assert "retry" not in wrong.output.lower()
    assert "Step 1/" not in wrong.output  # refused before anything was built
    assert "not-the-password-123" not in wrong.output

    right = imgctl("release", "-c", str(config), "--version", "1.0.0", "-v",
                   env={"REG_USER": AUTH_USER, "REG_TOKEN": AUTH_PASSWORD})
    assert right.code == 0, right.output
    assert f"logged in to {auth_registry.host} as {AUTH_USER}" in right.stderr
    assert auth_registry.manifest_digest(f"{ns}/app", "latest") is not None
    for run in (anonymous, wrong, right):
        assert AUTH_PASSWORD not in run.output
        assert "Traceback" not in run.output


def test_docker_config_credentials_are_the_fallback(tmp_path: Path, auth_registry: RegistryServer, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = two_image_config(tmp_path, auth_registry.host, ns)
    login = subprocess.run(
        ["docker", "--config", str(docker_config), "login", "-u", AUTH_USER, "--password-stdin", auth_registry.host],
        input=AUTH_PASSWORD, capture_output=True, text=True,
    )
    assert login.returncode == 0, login.stderr
    run = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert run.code == 0, run.output
    assert "credentials from docker config" in run.stderr
    assert AUTH_PASSWORD not in run.output


def test_error_inside_the_push_stream_is_a_failure(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """The daemon answers HTTP 200 and puts the registry's refusal inside the stream."""
    with FaultProxy(registry.host, [Rule("PUT", r"/manifests/", "status", count=100, status=400)]) as proxy:
        ns = unique()
        config = two_image_config(tmp_path, proxy.host, ns)
        run = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert run.code == 1, run.output
    assert "push of" in run.output and "failed" in run.output
    assert "Traceback" not in run.output
    assert "FAILED" in run.stdout
    assert registry.tags(f"{ns}/base") == []


def test_transient_manifest_failure_is_retried(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    rule = Rule("PUT", r"/manifests/", "status", count=2, status=503)
    with FaultProxy(registry.host, [rule]) as proxy:
        ns = unique()
        config = two_image_config(tmp_path, proxy.host, ns)
        run = imgctl("release", "-c", str(config), "--version", "1.0.0")
        assert proxy.fired(rule) == 2
    assert run.code == 0, run.output
    assert re.search(r"retry 1/\d+ of push", run.stderr) and "503" in run.stderr
    assert registry.manifest_digest(f"{ns}/base", "1.0.0") is not None


def test_engine_unreachable_says_how_to_fix(tmp_path: Path, imgctl) -> None:  # type: ignore[no-untyped-def]
    write_base_context(tmp_path / "base")
    config = tmp_path / "imgctl.yaml"
    config.write_text(yaml.safe_dump({"registry": "127.0.0.1:9", "images": [{"name": "base", "context": "base"}]}))
    run = imgctl("release", "-c", str(config), "--version", "1.0.0",
                 env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"})
    assert run.code == 1, run.output
    assert "cannot reach the Docker engine" in run.stderr
    assert "DOCKER_HOST" in run.stderr
    assert "Traceback" not in run.output


def test_many_floating_tags_of_one_repository_land_without_a_retry(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """docker-registry's filesystem storage rewrites a manifest's revision link on every tag PUT and
    can hand a concurrent read of that link a half-written file (a 500). The floating tags of one
    repository therefore go one after another: no request of the release is answered 500."""
    write_base_context(tmp_path / "base")
    floating = ["latest", "stable", "edge", "{major}", "{major}.{minor}", "current", "main", "lts"]
    ns = unique()
    config = tmp_path / "imgctl.yaml"
    config.write_text(yaml.safe_dump({
        "registry": registry.host, "namespace": ns,
        "images": [
            {"name": "one", "context": "base", "tags": ["{version}", *floating]},
            # after one, so that only the floating phase has the two repositories' requests at once
            {"name": "two", "context": "base", "tags": ["{version}", *floating], "depends_on": ["one"]},
        ],
    }, sort_keys=False))
    run = imgctl("release", "-c", str(config), "--version", "2.3.4", "--output", "json")
    assert run.code == 0, run.output
    assert run.of_type("retrying") == []
    assert "http.response.status=500" not in registry.log_text()
    for name in ("one", "two"):
        assert sorted(registry.tags(f"{ns}/{name}")) == sorted(["2.3.4", "latest", "stable", "edge", "2", "2.3", "current", "main", "lts"])
