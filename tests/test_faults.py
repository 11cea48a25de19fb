"""Faults injected for real: a proxy in front of a real registry misbehaves, releases still land."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import chain_config, unique
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.registry import RegistryServer, free_port

pytestmark = pytest.mark.engine


def config_for(tmp_path: Path, host: str, ns: str) -> Path:
    return chain_config(tmp_path, host, ns, {"app": "RUN head -c 300000 /dev/urandom > /blob\n"})


def assert_all_verified(registry: RegistryServer, ns: str, run) -> None:  # type: ignore[no-untyped-def]
    assert run.code == 0, run.output
    for name in ("base", "app"):
        for tag in ("1.0.0", "latest"):
            assert registry.manifest_digest(f"{ns}/{name}", tag) is not None, (name, tag)
    pushed = {e["reference"]: e["digest"] for e in run.of_type("push_done")}
    for reference, digest in pushed.items():
        repo, tag = reference.split("/", 1)[1].rsplit(":", 1)
        assert registry.manifest_digest(repo, tag) == digest


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(Rule("GET", r"^/v2/$", "status", count=1, status=502), id="502-on-ping"),
        pytest.param(Rule("PUT", r"/manifests/", "status", count=2, status=503), id="503-on-manifest-twice"),
        pytest.param(Rule("PUT", r"/manifests/", "status", count=1, status=429, retry_after=2), id="429-on-manifest"),
        pytest.param(Rule("PATCH", r"/blobs/uploads/", "reset", count=1, after_bytes=65536), id="reset-during-blob-upload"),
        pytest.param(Rule("PUT", r"/manifests/", "reset", count=1), id="reset-on-manifest"),
    ],
)
def test_release_survives(rule: Rule, tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    with FaultProxy(registry.host, [rule]) as proxy:
        run = imgctl("release", "-c", str(config_for(tmp_path, proxy.host, ns)), "--version", "1.0.0", "--output", "json")
        fired = proxy.fired(rule)
    assert fired == rule.count, f"the fault never happened: {fired}"
    assert_all_verified(registry, ns, run)


def test_retry_after_is_honoured(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    rule = Rule("HEAD", r"/manifests/", "status", count=1, status=429, retry_after=3)
    with FaultProxy(registry.host, [rule]) as proxy:
        run = imgctl("release", "-c", str(config_for(tmp_path, proxy.host, ns)), "--version", "1.0.0", "--output", "json")
        assert proxy.fired(rule) == 1
    assert_all_verified(registry, ns, run)
    retries = run.of_type("retrying")
    assert [r["wait"] for r in retries if "429" in r["reason"]] == [3.0]


def test_stalled_push_is_cancelled_and_retried(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    rule = Rule("PUT", r"/manifests/", "stall", count=1, stall_seconds=20)
    with FaultProxy(registry.host, [rule]) as proxy:
        run = imgctl("release", "-c", str(config_for(tmp_path, proxy.host, ns)), "--version", "1.0.0",
                     "--output", "json", "--push-timeout", "4")
        assert proxy.fired(rule) == 1
    assert_all_verified(registry, ns, run)
    assert any("Timeout" in r["reason"] or "timed out" in r["reason"] for r in run.of_type("retrying")), run.output


def test_registry_down_fails_in_bounded_time(tmp_path: Path, imgctl) -> None:  # type: ignore[no-untyped-def]
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    run = imgctl("release", "-c", str(config_for(tmp_path, host, unique())), "--version", "1.0.0",
                 "--retry-window", "4", timeout=120)
    elapsed = time.monotonic() - started
    assert run.code == 1, run.output
    assert "connection refused" in run.output
    assert f"gave up on registry {host}: no request to it succeeded for 4s" in run.stderr
    assert "retry 1/" in run.stderr
    assert "Traceback" not in run.output
    print(f"registry down: failed after {elapsed:.1f}s")


def test_refused_floating_tags_fail_each_image_once(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Every image released, then the registry refuses each `latest`: the floating phase (all its
    tags at once) reports one failure per image, and the immutable tags stay."""
    ns = unique()
    rule = Rule("PUT", r"/manifests/latest$", "status", count=100, status=403)
    with FaultProxy(registry.host, [rule]) as proxy:
        run = imgctl("release", "-c", str(config_for(tmp_path, proxy.host, ns)), "--version", "1.0.0", "--output", "json")
        assert proxy.fired(rule) == 2, "a refusal is not retried: one PUT per image"
    assert run.code == 1, run.output
    failed = run.of_type("image_failed")
    assert sorted(e["image"] for e in failed) == ["app", "base"]
    assert all(e["stage"] == "push" and f"writing {ns}/{e['image']}/manifests/latest" in e["error"] for e in failed), failed
    assert run.of_type("summary")[0]["floating"] == "partly pushed"
    for name in ("base", "app"):
        assert registry.manifest_digest(f"{ns}/{name}", "1.0.0") is not None
        assert registry.manifest_digest(f"{ns}/{name}", "latest") is None
