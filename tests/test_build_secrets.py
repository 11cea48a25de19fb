"""Build secrets, SSH agents and registry cache through BuildKit's session, for real: the secret
reaches the RUN step and nothing else; a missing one is named before anything is built."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unique, write_base_context, write_config, write_context
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.engine, pytest.mark.builder("buildkit")]  # secrets and SSH are BuildKit's

TOKEN = "npm-Tok3n-" + "9f2c4e1b7a3d"  # a known secret, searched for everywhere
FILE_SECRET = "file-Secr3t-" + "5e8d1c2a"

APP = """\
ARG B
FROM ${B}
RUN --mount=type=secret,id=npm_token cat /run/secrets/npm_token | sha256sum | cut -c1-64 > /token.sha
RUN --mount=type=secret,id=from_file,required=true sha256sum /run/secrets/from_file | cut -c1-64 > /file.sha
RUN echo "built with a secret"
"""


def _config(tmp_path: Path, host: str, ns: str, app: str = APP, **app_extra: object) -> Path:
    write_base_context(tmp_path / "base")
    write_context(tmp_path / "app", app)
    (tmp_path / "secret.txt").write_text(FILE_SECRET)
    return write_config(tmp_path, {"registry": host, "namespace": ns, "images": [
        {"name": "base", "context": "base", "tags": ["{version}", "latest"]},
        {"name": "app", "context": "app", "build_args": {"B": "{registry}/{namespace}/base:{version}"},
         "tags": ["{version}", "latest"],
         "secrets": {"npm_token": {"env": "NPM_TOKEN"}, "from_file": {"file": "secret.txt"}}, **app_extra},
    ]})


def _files_of(reference: str) -> bytes:
    """Every byte of the image as `docker save` writes it, each layer unpacked."""
    saved = subprocess.run(["docker", "save", reference], capture_output=True, check=True).stdout
    out = [saved]
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        for member in outer.getmembers():
            if member.name.endswith("layer.tar"):
                data = outer.extractfile(member)
                assert data is not None
                out.append(data.read())
    return b"".join(out)


def test_secrets_reach_the_build_and_nothing_else(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = _config(tmp_path, registry.host, ns)
    report = tmp_path / "report.json"
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json", "--report", str(report),
                 "--log-dir", str(tmp_path / "logs"), env={"NPM_TOKEN": TOKEN})
    assert run.code == 0, run.output
    reference = f"{registry.host}/{ns}/app:1.0.0"
    shown = subprocess.run(["docker", "run", "--rm", reference, "cat", "/token.sha", "/file.sha"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert shown == [hashlib.sha256(TOKEN.encode()).hexdigest(), hashlib.sha256(FILE_SECRET.encode()).hexdigest()]
    history = subprocess.run(["docker", "history", "--no-trunc", reference], capture_output=True, text=True).stdout
    written = run.output + history + report.read_text() + "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    for value in (TOKEN, FILE_SECRET):
        assert value not in written
        assert value.encode() not in _files_of(reference)
    plan = json.loads(imgctl("plan", "-c", str(config), "--version", "1.0.0", "--json").stdout)
    assert plan["images"][1]["secrets"] == ["npm_token", "from_file"]


def test_a_missing_secret_is_named_before_anything_is_built(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    config = _config(tmp_path, registry.host, unique())
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json")
    assert run.code == 2, run.output
    assert "app: secret npm_token: the environment variable NPM_TOKEN is not set" in run.stderr
    assert not run.of_type("image_started") and "Traceback" not in run.output
    (tmp_path / "secret.txt").unlink()
    gone = imgctl("release", "-c", str(config), "--version", "1.0.0", env={"NPM_TOKEN": TOKEN})
    assert gone.code == 2 and "app: secret from_file: cannot read" in gone.stderr


def test_a_required_secret_nobody_gives_fails_with_buildkits_words(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    app = "ARG B\nFROM ${B}\nRUN --mount=type=secret,id=nobody,required=true cat /run/secrets/nobody\n"
    config = _config(tmp_path, registry.host, unique(), app=app)
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--output", "json", env={"NPM_TOKEN": TOKEN})
    assert run.code == 1, run.output
    [failed] = run.of_type("image_failed")
    assert "secret nobody not found" in failed["error"] and "name it in the image's secrets:" in failed["error"]


def test_the_classic_builder_refuses_secrets(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    config = _config(tmp_path, registry.host, unique())
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--builder", "classic", env={"NPM_TOKEN": TOKEN})
    assert run.code == 2 and "served to BuildKit only" in run.stderr


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real ssh-agent holding a fresh key; its environment."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
        for _ in range(50):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.1"])
        env = {"SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(tmp_path / "key")], env={**os.environ, **env}, check=True, capture_output=True)
        yield env
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_the_ssh_agent_is_relayed(tmp_path: Path, registry: RegistryServer, ssh_agent: dict[str, str], imgctl) -> None:  # type: ignore[no-untyped-def]
    """`ssh: [default]` is $SSH_AUTH_SOCK, mounted in the step as a socket (the relay itself, bytes
    both ways to the real agent, is tests/test_session.py's)."""
    ns = unique()
    write_base_context(tmp_path / "base")
    write_context(tmp_path / "app", 'ARG B\nFROM ${B}\nRUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo "an agent is there"\n')
    config = write_config(tmp_path, {"registry": registry.host, "namespace": ns, "images": [
        {"name": "base", "context": "base"},
        {"name": "app", "context": "app", "build_args": {"B": "{registry}/{namespace}/base:{version}"}, "ssh": ["default"]},
    ]})
    run = imgctl("release", "-c", str(config), "--version", "1.0.0", "--no-cache", env=ssh_agent)
    assert run.code == 0, run.output
    assert "an agent is there" in run.stderr
    unset = imgctl("release", "-c", str(config), "--version", "1.0.0", env={"SSH_AUTH_SOCK": ""})
    assert unset.code == 2 and "app: ssh default: SSH_AUTH_SOCK is not set" in unset.stderr


def test_a_fresh_runner_takes_its_cache_from_the_registry(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """inline_cache puts BuildKit's cache metadata in the pushed image; a runner with an empty
    cache and no local images then takes every step from it (cache_from), here a 3 s RUN."""
    ns = unique()
    write_base_context(tmp_path / "base")
    write_context(tmp_path / "app", f'ARG B\nFROM ${{B}}\nRUN sleep 3 && echo "slow step ran" > /{ns} && cat /{ns}\n')
    config = write_config(tmp_path, {"registry": registry.host, "namespace": ns, "images": [
        {"name": "base", "context": "base", "tags": ["{version}", "latest"], "inline_cache": True,
         "cache_from": ["{registry}/{namespace}/{name}:latest"]},
        {"name": "app", "context": "app", "build_args": {"B": "{registry}/{namespace}/base:{version}"},
         "tags": ["{version}", "latest"], "inline_cache": True, "cache_from": ["{registry}/{namespace}/{name}:latest"]},
    ]})
    first = imgctl("release", "-c", str(config), "--version", "1.0.0")
    ran = re.compile(r"^app \| slow step ran$", re.M)  # the step's output, not its command line
    assert first.code == 0 and ran.search(first.stderr), first.output

    def fresh_runner() -> None:
        subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=True)
        listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout
        mine = [ref for ref in listed.split() if ref.startswith(f"{registry.host}/{ns}/")]
        subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True)

    fresh_runner()
    second = imgctl("release", "-c", str(config), "--version", "1.0.1")
    assert second.code == 0, second.output
    assert not ran.search(second.stderr)  # taken from the registry's cache
    assert re.search(r"^app \| CACHED$", second.stderr, re.M)
    fresh_runner()
    cold = imgctl("release", "-c", str(config), "--version", "1.0.2", "--no-cache")
    assert cold.code == 0 and ran.search(cold.stderr)  # the same run without the cache does the work
