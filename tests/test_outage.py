"""Outages outlasted for real: a registry that keeps failing for a while, a token service that is
busy or down, and a registry that is dead, which fails within its retry window with one message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER, unique, write_base_context, write_config
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.registry import RegistryServer, free_port
from tests.support.tokenauth import TokenRegistry

pytestmark = pytest.mark.engine

ENV = {"REG_USER": AUTH_USER, "REG_TOKEN": AUTH_PASSWORD}
AUTH = {"auth": {"username_env": "REG_USER", "password_env": "REG_TOKEN"}}


def images_config(tmp_path: Path, host: str, ns: str, names: tuple[str, ...] = ("base",), **top: Any) -> Path:
    """Images built apart (none depends on another), each busybox FROM scratch, tagged {version}."""
    for name in names:
        write_base_context(tmp_path / name, f"LABEL image={name}\n")
    images = [{"name": name, "context": name, "tags": ["{version}"]} for name in names]
    return write_config(tmp_path, {"registry": host, "namespace": ns, **top, "images": images})


def test_five_503s_on_a_manifest_put_are_outlasted(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    rule = Rule("PUT", rf"/{ns}/base/manifests/1\.0\.0$", "status", count=5, status=503)
    with FaultProxy(registry.host, [rule]) as proxy:
        run = imgctl("release", "-c", str(images_config(tmp_path, proxy.host, ns)), "--version", "1.0.0", "--output", "json")
        assert proxy.fired(rule) == 5
    assert run.code == 0, run.output
    retries = [r for r in run.of_type("retrying") if r["action"] == f"push {proxy.host}/{ns}/base:1.0.0"]
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4, 5], run.output
    assert all("503" in r["reason"] and r["attempts"] > r["attempt"] for r in retries), retries
    assert [r["wait"] for r in retries] == sorted(r["wait"] for r in retries)  # backing off
    pushed = run.of_type("push_done")[-1]
    assert registry.manifest_digest(f"{ns}/base", "1.0.0") == pushed["digest"]


def test_a_busy_token_service_is_waited_for_as_it_asks(tmp_path: Path, token_registry: TokenRegistry, imgctl) -> None:  # type: ignore[no-untyped-def]
    service = token_registry.service
    ns = unique()
    config = images_config(tmp_path, token_registry.host, ns, **AUTH)
    service.fail_next(2, 429, retry_after=2)
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json", env=ENV)
    assert run.code == 0, run.output
    refused = [r for r in service.requests if r.status == 429]
    assert len(refused) == 2, service.requests
    retries = run.of_type("retrying")
    assert [r["wait"] for r in retries] == [2.0, 2.0], run.output  # Retry-After: 2, exactly, each time
    assert all("429" in r["reason"] and "token" in r["reason"] for r in retries), retries
    assert service.issued(AUTH_USER), "no token was issued after the 429s"
    assert token_registry.manifest_digest(f"{ns}/base", "1.0.0") == run.of_type("verified")[0]["digest"]
    assert AUTH_PASSWORD not in run.output


def test_a_token_service_down_for_10s_is_waited_out(tmp_path: Path, token_registry: TokenRegistry, imgctl) -> None:  # type: ignore[no-untyped-def]
    service = token_registry.service
    ns = unique()
    config = images_config(tmp_path, token_registry.host, ns, **AUTH)
    service.down_for(10)
    started = time.monotonic()
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json", env=ENV)
    assert run.code == 0, run.output
    assert time.monotonic() - started >= 10  # it did wait the outage out: nothing could log in before
    retries = run.of_type("retrying")
    assert retries and all("token service" in r["reason"] for r in retries), run.output
    assert sum(r["wait"] for r in retries) >= 9, retries
    assert token_registry.manifest_digest(f"{ns}/base", "1.0.0") == run.of_type("verified")[0]["digest"]


def test_a_dead_registry_fails_within_the_window_with_one_message(tmp_path: Path, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Nothing listens on the port. Three images push to it at once; the config asks for a 600 s
    window and --retry-window 10 overrides it: each operation retries for 10 s from the registry's
    first failure, then all fail with the same message naming the registry (the default, 90 s,
    is the same arithmetic: tests/test_retry.py)."""
    host = f"127.0.0.1:{free_port()}"
    config = images_config(tmp_path, host, unique(), ("one", "two", "three"), retry={"window": 600})
    started = time.monotonic()
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json", "--retry-window", "10", timeout=180)
    elapsed = time.monotonic() - started
    assert run.code == 1, run.output
    assert elapsed < 180
    failed = run.of_type("image_failed")
    assert sorted(e["image"] for e in failed) == ["one", "three", "two"], run.output
    messages = {e["error"] for e in failed}
    assert len(messages) == 1, messages
    message = messages.pop()
    assert message.startswith(f"gave up on registry {host}: no request to it succeeded for 10s"), message
    assert "connection refused" in message
    retries = run.of_type("retrying")
    assert retries, run.output
    first = min(r["time"] for r in retries)
    assert max(r["time"] + r["wait"] for r in retries) <= first + 10 + 1.0  # no retry past the window
    assert max(e["time"] for e in failed) - first >= 9.5  # and it used the window: 10 s, not 600
    assert max(e["time"] for e in failed) - first < 10 + 15  # the last attempts fail at once
    assert "Traceback" not in run.output


def test_the_config_sets_the_window(tmp_path: Path, imgctl) -> None:  # type: ignore[no-untyped-def]
    host = f"127.0.0.1:{free_port()}"
    config = images_config(tmp_path, host, unique(), retry={"window": 2})
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", timeout=120)
    assert run.code == 1, run.output
    assert f"gave up on registry {host}: no request to it succeeded for 2s (the retry window)" in run.stderr
    assert "retry 1/" in run.stderr
