"""Bad days made boring: interrupts, re-runs, broken docker configs, secrets kept, `imgctl login`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER, chain_config, unique, write_base_context, write_config, write_context
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine

EPOCH = {"SOURCE_DATE_EPOCH": "1767225600"}  # reproducible labels: a re-run builds the very same image



@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.builder("classic")
def test_interrupt_stops_cleanly_and_moves_no_floating_tag(
    signum: signal.Signals, tmp_path: Path, registry: RegistryServer, docker_config: Path, builder: str | None,
) -> None:
    """The classic builder cannot be cancelled: the running step is given its grace period (BuildKit's
    is cancelled: tests/test_buildkit.py)."""
    ns = unique()
    config = chain_config(tmp_path, registry.host, ns, {
        "slow": 'RUN echo "slow step starts" && sleep 4 && echo "slow step ends"\n', "after": "",
    })
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config), "TMPDIR": str(tmp_path), **EPOCH, "IMGCTL_BUILDER": str(builder)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgctl", "release", "-c", str(config), "--version", "1.0.0", "--no-cache",
         "--report", str(tmp_path / "report.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until the slow RUN is running, then interrupt
        seen.append(line)
        if "slow step starts" in line:
            proc.send_signal(signum)
            break
    rest_err = proc.stderr.read()
    stdout = proc.stdout.read() if proc.stdout else ""
    code = proc.wait(timeout=120)
    stderr = "".join(seen) + rest_err
    assert code == 130, stderr + stdout
    assert "interrupted: starting nothing new" in stderr
    assert "slow step ends" in stderr  # the running image was given time to finish
    assert "slow | skipped: release interrupted before its push" in stderr
    assert "after | skipped: release interrupted" in stderr
    assert "Traceback" not in stderr
    assert registry.tags(f"{ns}/base") == ["1.0.0"]  # immutable tag only: latest did not move
    assert registry.tags(f"{ns}/slow") == []
    assert registry.tags(f"{ns}/after") == []
    assert "Release interrupted" in stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["interrupted"] is True and report["exit_code"] == 130
    statuses = {row["image"]: row["result"] for row in report["images"]}
    assert statuses == {"base": "released", "slow": "interrupted", "after": "skipped"}


def test_rerun_after_failure_finishes_the_rest_and_reports_unchanged(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    write_base_context(tmp_path / "base")
    write_context(tmp_path / "app", 'ARG B\nFROM ${B}\nRUN echo app > /app\n')
    with FaultProxy(registry.host) as proxy:
        config = write_config(tmp_path, {
            "registry": proxy.host, "namespace": ns,
            "images": [
                {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
                {"name": "app", "context": "app", "build_args": {"B": "{registry}/{namespace}/base:{version}"},
                 "tags": ["{version}", "latest"]},
            ],
        })
        # app's manifests are refused for good during the first run
        rule = proxy.add_rule(Rule("PUT", rf"/{ns}/app/manifests/", "status", count=100, status=400))
        first = imgctl("release", "-c", str(config), "--version", "2.0.0", "--report", str(tmp_path / "r1.json"), env=EPOCH)
        assert first.code == 1, first.output
        assert proxy.fired(rule) >= 1
        assert registry.tags(f"{ns}/base") == ["2.0.0"]
        rule.count = 0  # the registry is healthy again
        second = imgctl("release", "-c", str(config), "--version", "2.0.0", "--report", str(tmp_path / "r2.json"), env=EPOCH)
    assert second.code == 0, second.output
    report = json.loads((tmp_path / "r2.json").read_text())
    tags = {t["reference"].split("/", 1)[1]: t["status"] for row in report["images"] for t in row["tags"]}
    assert tags == {
        f"{ns}/base:2.0.0": "unchanged", f"{ns}/base:latest": "pushed",
        f"{ns}/app:2.0.0": "pushed", f"{ns}/app:latest": "pushed",
    }
    assert sorted(registry.tags(f"{ns}/app")) == ["2.0.0", "latest"]
    first_report = json.loads((tmp_path / "r1.json").read_text())
    assert first_report["ok"] is False and first_report["floating"].startswith("held back")


def test_missing_credential_helper_is_a_clear_error_and_private_config_avoids_it(tmp_path: Path, registry: RegistryServer, imgctl, docker_config: Path) -> None:  # type: ignore[no-untyped-def]
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "imgctl-test-missing-helper"}))
    write_base_context(tmp_path / "base")
    config = write_config(tmp_path, {"registry": registry.host, "namespace": unique(),
                                      "images": [{"name": "base", "context": "base"}]})
    broken = imgctl("release", "-c", str(config), "--version", "1.0.0")
    assert broken.code == 1, broken.output
    assert "credential helper" in broken.output and "--private-docker-config" in broken.output
    assert "Traceback" not in broken.output
    fixed = imgctl("release", "-c", str(config), "--version", "1.0.0", "--private-docker-config")
    assert fixed.code == 0, fixed.output
    assert json.loads((docker_config / "config.json").read_text()) == {"credsStore": "imgctl-test-missing-helper"}


def test_secret_looking_build_arg_warns_and_strict_refuses(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    write_base_context(tmp_path / "base", "ARG API_TOKEN\n")
    config = write_config(tmp_path, {"registry": registry.host, "namespace": unique(),
                                      "images": [{"name": "base", "context": "base", "build_args": {"API_TOKEN": "abc"}}]})
    warned = imgctl("release", "-c", str(config), "--version", "1.0.0", "--no-push")
    assert warned.code == 0, warned.output
    assert "warning: base: build arg API_TOKEN looks like a secret" in warned.stderr
    strict = imgctl("release", "-c", str(config), "--version", "1.0.0", "--no-push", "--strict")
    assert strict.code == 2, strict.output
    assert "API_TOKEN" in strict.stderr and "--strict" in strict.stderr


def test_login_command_checks_each_registry(tmp_path: Path, auth_registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    write_base_context(tmp_path / "base")
    config = write_config(tmp_path, {"registry": auth_registry.host, "namespace": "ns",
                                      "auth": {"username_env": "REG_USER", "password_env": "REG_TOKEN"},
                                      "images": [{"name": "base", "context": "base"}]})
    ok = imgctl("login", "-c", str(config), env={"REG_USER": AUTH_USER, "REG_TOKEN": AUTH_PASSWORD})
    assert ok.code == 0, ok.output
    assert f"{auth_registry.host}: logged in as {AUTH_USER} (credentials from environment (REG_USER/REG_TOKEN))" in ok.stdout
    wrong = imgctl("login", "-c", str(config), env={"REG_USER": AUTH_USER, "REG_TOKEN": "wrong-password-xyz"})
    assert wrong.code == 1 and f"refused user '{AUTH_USER}'" in wrong.stderr
    assert "wrong-password-xyz" not in wrong.output
    stdin = subprocess.run(
        [sys.executable, "-m", "imgctl", "login", "-c", str(config), "--password-stdin", "-u", AUTH_USER],
        input=AUTH_PASSWORD + "\n", capture_output=True, text=True,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")},
    )
    assert stdin.returncode == 0, stdin.stderr
    assert "credentials from standard input" in stdin.stdout
    for run_output in (ok.output, wrong.output, stdin.stdout + stdin.stderr):
        assert AUTH_PASSWORD not in run_output
    assert not (Path.home() / ".docker" / "config.json").exists() or AUTH_PASSWORD not in (Path.home() / ".docker" / "config.json").read_text()


def test_no_secret_in_any_output_or_file(tmp_path: Path, auth_registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Every command, every verbosity, every output format: the password never shows."""
    ns = unique()
    write_base_context(tmp_path / "base")
    config = write_config(tmp_path, {"registry": auth_registry.host, "namespace": ns,
                                      "auth": {"username_env": "REG_USER", "password_env": "REG_TOKEN"},
                                      "images": [{"name": "base", "context": "base", "tags": ["{version}", "latest"]}]})
    env = {"REG_USER": AUTH_USER, "REG_TOKEN": AUTH_PASSWORD}
    wrong = {"REG_USER": AUTH_USER, "REG_TOKEN": AUTH_PASSWORD + "-but-wrong"}
    runs = [
        imgctl("validate", "-c", str(config), env=env),
        imgctl("plan", "-c", str(config), "--version", "1.0.0", env=env),
        imgctl("plan", "-c", str(config), "--version", "1.0.0", "--json", env=env),
        imgctl("login", "-c", str(config), env=env),
        imgctl("login", "-c", str(config), env=wrong),
        imgctl("release", "-c", str(config), "--version", "1.0.0", "-v", "--report", str(tmp_path / "a.json"), env=env),
        imgctl("release", "-c", str(config), "--version", "1.0.1", "-q", env=env),
        imgctl("release", "-c", str(config), "--version", "1.0.2", "--output", "json", "--report", str(tmp_path / "b.json"), env=env),
        imgctl("release", "-c", str(config), "--version", "1.0.3", "-v", env=wrong),
        imgctl("release", "-c", str(config), "--version", "1.0.4", "--output", "json", env=wrong),
    ]
    assert [r.code for r in runs] == [0, 0, 0, 0, 1, 0, 0, 0, 1, 1]
    for run in runs:
        assert AUTH_PASSWORD not in run.output
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "registry" not in p.parts[-3:-1]]
    assert any(p.name == "a.json" for p in written)
    for path in written:
        if path.stat().st_size < 50_000_000:
            assert AUTH_PASSWORD.encode() not in path.read_bytes(), path
