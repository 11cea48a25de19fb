"""Shared fixtures: the real engine, real registries, busybox images FROM scratch, and running imgctl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.registry import RegistryServer
from tests.support.tokenauth import TokenRegistry, TokenService

BUSYBOX = Path("/bin/busybox")
AUTH_USER = "imgctl-ci"
AUTH_PASSWORD = "Sup3r-S3cret-Pa55word-4f9c2e"  # a known secret, searched for in every output

BASE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
"""


@pytest.fixture(scope="session")
def engine() -> None:
    """The real Docker engine must answer: scripts/test.sh starts it. Fail loudly, never skip."""
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"the Docker engine is not running (run `bash scripts/test.sh`): {done.stderr.strip()}")


@pytest.fixture
def registry(tmp_path: Path, engine: None) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "registry") as server:
        yield server
    _remove_images(server.host)


@pytest.fixture
def auth_registry(tmp_path: Path, engine: None) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "auth-registry", htpasswd=(AUTH_USER, AUTH_PASSWORD)) as server:
        yield server
    _remove_images(server.host)


@pytest.fixture
def token_service() -> Iterator[TokenService]:
    """auth.docker.io's part: Basic auth in, a JWT for the scopes asked out ({AUTH_USER} may push)."""
    service = TokenService(users={AUTH_USER: AUTH_PASSWORD}).start()
    yield service
    service.stop()


@pytest.fixture
def token_registry(tmp_path: Path, engine: None, token_service: TokenService) -> Iterator[TokenRegistry]:
    """A real docker-registry in `auth: token` mode that verifies `token_service`'s JWTs."""
    with TokenRegistry(tmp_path / "token-registry", token_service) as server:
        yield server
    _remove_images(server.host)


def _remove_images(host: str) -> None:
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    ).stdout.split()
    mine = [ref for ref in listed if ref.startswith(host + "/")]
    if mine:
        subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True)


def write_base_context(folder: Path, extra: str = "") -> Path:
    """A FROM-scratch image holding only a static busybox (nothing can be pulled here)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, folder / "busybox")
    (folder / "Dockerfile").write_text(BASE_DOCKERFILE + extra)
    return folder


def write_config(folder: Path, data: dict[str, Any]) -> Path:
    """An imgctl.yaml in `folder`, keys in the order given."""
    path = folder / "imgctl.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_context(folder: Path, dockerfile: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    return folder


def chain_config(tmp_path: Path, host: str, ns: str, images: dict[str, str], **top: Any) -> Path:
    """`base` (busybox FROM scratch), then each image of `images` built FROM the one before it
    (`ARG B`, `FROM ${B}`, then the lines given); every image tagged {version} and latest."""
    write_base_context(tmp_path / "base")
    entries: list[dict[str, Any]] = [{"name": "base", "context": "base", "tags": ["{version}", "latest"]}]
    for name, lines in images.items():
        write_context(tmp_path / name, "ARG B\nFROM ${B}\n" + lines)
        parent = entries[-1]["name"]
        entries.append({"name": name, "context": name, "build_args": {"B": f"{{registry}}/{{namespace}}/{parent}:{{version}}"},
                        "tags": ["{version}", "latest"]})
    return write_config(tmp_path, {"registry": host, "namespace": ns, **top, "images": entries})


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["type"] == kind]


@pytest.fixture
def docker_config(tmp_path: Path) -> Path:
    """An empty, private docker config: no credentials leak in from the machine's own."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


BUILDERS = ("buildkit", "classic")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "builder(*names): run only under these builders (wording or mechanics of one builder)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every engine test that runs the CLI (the `imgctl` fixture, or its own process given the
    `builder` fixture's $IMGCTL_BUILDER) runs under both builders, unless it says which."""
    uses = "imgctl" in metafunc.fixturenames or "builder" in metafunc.fixturenames
    if not uses or metafunc.definition.get_closest_marker("engine") is None:
        return
    marker = metafunc.definition.get_closest_marker("builder")
    metafunc.parametrize("builder", marker.args if marker else BUILDERS, indirect=True)


@pytest.fixture
def builder(request: pytest.FixtureRequest) -> str | None:
    """The builder the `imgctl` fixture's runs use ($IMGCTL_BUILDER); None: the default (auto)."""
    return getattr(request, "param", None)


@pytest.fixture
def imgctl(docker_config: Path, tmp_path: Path, builder: str | None):  # type: ignore[no-untyped-def]
    """Run the real CLI in a subprocess, as a user would; returns a Run. An engine test runs it
    under each builder (see pytest_generate_tests); `--builder` in the arguments wins."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> Run:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DOCKERHUB_", "IMGCTL_"))}
        if builder is not None:
            environ["IMGCTL_BUILDER"] = builder
        environ["DOCKER_CONFIG"] = str(docker_config)
        environ["TMPDIR"] = str(tmp_path)
        environ.update(env or {})
        done = subprocess.run(
            [sys.executable, "-m", "imgctl", *args], capture_output=True, text=True, env=environ,
            cwd=cwd or tmp_path, timeout=timeout,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"
