"""imgctl's BuildKit session against the real dockerd: Health through a long build, secrets, SSH
forwarding to a real ssh-agent, registry credentials for a private base, and its end on every path.

Each build is a raw `POST /build?version=2&session=<id>` (as engine._buildkit posts it), so these
tests check the session alone, not imgctl's build code.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import pytest

from imgctl.session import Session
from tests.conftest import AUTH_PASSWORD, AUTH_USER, BUSYBOX, unique
from tests.support.registry import RegistryServer
from tests.support.tokenauth import TokenRegistry

pytestmark = pytest.mark.engine

HEALTH = "/grpc.health.v1.Health/Check"
SECRET = "/moby.buildkit.secrets.v1.Secrets/GetSecret"


def connect_engine() -> socket.socket:
    """A new raw connection to the engine DOCKER_HOST names (its default: the unix socket)."""
    url = urlparse(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    if url.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(url.path)
        return sock
    assert url.scheme == "tcp" and url.hostname, f"DOCKER_HOST {url.geturl()} is not unix:// nor tcp://"
    return socket.create_connection((url.hostname, url.port or 2375))


class Recording:
    """connect() for a Session that keeps the sockets it opened, to see them closed."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def __call__(self) -> socket.socket:
        sock = connect_engine()
        self.sockets.append(sock)
        return sock


def anonymous(host: str) -> None:
    return None


def context_tar(dockerfile: str, files: dict[str, bytes] | None = None) -> bytes:
    """A build context whose first entry is `./` (BuildKit sniffs the first bytes for a tar)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        root = tarfile.TarInfo("./")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(root)
        for name, data in {"Dockerfile": dockerfile.encode(), **(files or {})}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def post_build(session_id: str, dockerfile: str, *, files: dict[str, bytes] | None = None, tag: str | None = None,
               **params: Any) -> Any:
    api = docker.APIClient(version="auto")
    query = {"version": "2", "session": session_id, "buildid": unique("b"), "networkmode": "none", "rm": 1, "nocache": 1, **params}
    if tag:
        query["t"] = tag
    response = api.post(f"{api.base_url}/v{api.api_version}/build", params=query, data=context_tar(dockerfile, files),
                        headers={"Content-Type": "application/x-tar"}, stream=True, timeout=None)
    assert response.status_code == 200, response.text
    return response


def build(session_id: str, dockerfile: str, **kwargs: Any) -> tuple[str | None, str, str]:
    """(image id, error, all the stream's text) of one BuildKit build."""
    response = post_build(session_id, dockerfile, **kwargs)
    image_id, errors, text = None, [], []
    with response:
        for line in response.iter_lines():
            record = json.loads(line)
            text.append(line.decode("utf-8", "replace"))
            if record.get("error") or record.get("errorDetail"):
                errors.append(record.get("error") or record["errorDetail"].get("message", ""))
            if record.get("id") == "moby.image.id":
                image_id = record["aux"]["ID"]
    return image_id, "\n".join(errors), "\n".join(text)


def run(image: str, *command: str) -> str:
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", image, *command],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def remove(*images: str) -> None:
    subprocess.run(["docker", "rmi", "-f", *images], capture_output=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """busybox FROM scratch, built with the classic builder (nothing can be pulled here)."""
    folder = tmp_path_factory.mktemp("session-base")
    shutil.copy(BUSYBOX, folder / "busybox")
    (folder / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
    tag = f"imgctl-session-base:{unique()}"
    done = subprocess.run(["docker", "build", "-q", "-t", tag, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=120)
    assert done.returncode == 0, done.stderr
    yield tag
    remove(tag)


@pytest.fixture
def image() -> Iterator[str]:
    tag = f"imgctl-session-out:{unique()}"
    yield tag
    remove(tag)


def test_health_keeps_a_session_open_through_a_build_longer_than_its_timeout(base: str, image: str) -> None:
    """BuildKit v0.8 checks Health every second and drops a session that misses 10 s of them; a
    secret mounted after 12 s proves the session was still there."""
    token = secrets.token_hex(8).encode()
    with Session(connect_engine, credentials=anonymous, secrets={"late": token}) as session:
        image_id, error, _ = build(session.id, f"FROM {base}\nRUN sleep 12\nRUN --mount=type=secret,id=late,required=true cat /run/secrets/late > /late\n", tag=image)
        assert not error and image_id
        assert session.alive
        assert session.calls[HEALTH] >= 2, session.calls  # every second here (v0.8), every 5 s from v0.11
    assert not session.alive
    assert run(image, "cat", "/late") == token.decode()


def test_a_secret_reaches_its_step_and_no_layer(base: str, image: str) -> None:
    value = ("s3cr3t-" + secrets.token_hex(24)).encode()
    dockerfile = (
        f"FROM {base}\n"
        "RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /hash\n"
        "RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo skipped > /absent\n"
    )
    with Session(connect_engine, credentials=anonymous, secrets={"tok": value}) as session:
        image_id, error, output = build(session.id, dockerfile, tag=image)
    assert not error and image_id
    assert run(image, "cat", "/hash").strip() == hashlib.sha256(value).hexdigest()
    assert run(image, "cat", "/absent").strip() == "skipped"  # an unknown, optional secret: the mount is skipped
    assert value not in output.encode()
    saved = subprocess.run(["docker", "save", image], capture_output=True, timeout=60, check=True).stdout
    assert hashlib.sha256(value).hexdigest().encode() in saved  # the layers are there, plain tars...
    assert value not in saved  # ...and the secret is in none of them


@pytest.mark.parametrize(("mount", "words"), [
    ("type=secret,id=nobody,required=true", "secret nobody not found"),
    ("type=ssh,id=nobody,required=true", "unset ssh forward key nobody"),
])
def test_a_mount_nobody_provides_fails_the_step_in_buildkits_words(base: str, mount: str, words: str) -> None:
    with Session(connect_engine, credentials=anonymous) as session:
        image_id, error, _ = build(session.id, f"FROM {base}\nRUN --mount={mount} true\n")
    assert image_id is None
    assert words in error


def _with_libraries(program: str) -> dict[str, bytes]:
    """`program` and every library ldd names, at their own paths: a dynamic binary that runs FROM scratch."""
    paths = [program]
    listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    for line in listed.splitlines():
        found = [word for word in line.split() if word.startswith("/")]
        paths.extend(found[:1])
    return {path.lstrip("/"): Path(path).read_bytes() for path in paths}


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ssh-agent (OpenSSH's, Debian's openssh-client) holding one new ed25519 key."""
    for tool in ("ssh-agent", "ssh-add", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install openssh-client (scripts/setup.sh)")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline and agent.poll() is None, "ssh-agent did not start"
            time.sleep(0.02)
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "imgctl-session-test", "-f", str(key)], check=True)
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, check=True,
                       capture_output=True)
        yield str(sock), key
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_ssh_forwards_the_real_agent_read_only(base: str, image: str, ssh_agent: tuple[str, Path]) -> None:
    """The real ssh-add, run inside the build, lists the agent's key and has it sign (ssh-add -T:
    a sign request out, the signature back and verified), both through the session's relay; its
    attempt to delete the keys is refused, and the agent still holds the key afterwards."""
    agent_sock, key = ssh_agent
    files = _with_libraries(shutil.which("ssh-add") or "/usr/bin/ssh-add")
    files["key.pub"] = key.with_suffix(".pub").read_bytes()
    dockerfile = (
        f"FROM {base}\n"
        "COPY . /\n"
        "RUN --mount=type=ssh ssh-add -l > /listed\n"
        "RUN --mount=type=ssh,id=default ssh-add -T /key.pub && echo signed > /signed\n"
        "RUN --mount=type=ssh sh -c 'ssh-add -D; echo $? > /delete-rc'\n"
    )
    with Session(connect_engine, credentials=anonymous, ssh={"default": agent_sock}) as session:
        image_id, error, _ = build(session.id, dockerfile, files=files, tag=image)
    assert not error and image_id, error
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(key.with_suffix(".pub"))], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    assert fingerprint in run(image, "cat", "/listed")
    assert run(image, "cat", "/signed").strip() == "signed"
    assert run(image, "cat", "/delete-rc").strip() != "0"
    held = subprocess.run(["ssh-add", "-l"], env={**os.environ, "SSH_AUTH_SOCK": agent_sock}, capture_output=True, text=True)
    assert fingerprint in held.stdout
    assert session.calls["/moby.sshforward.v1.SSH/ForwardAgent"] >= 3


@pytest.fixture(params=["basic", "token"])
def private_registry(request: pytest.FixtureRequest) -> RegistryServer:
    """A registry behind htpasswd (Basic), or in token mode as Docker Hub, GHCR... are, where
    anonymous users may not pull either."""
    if request.param == "basic":
        return request.getfixturevalue("auth_registry")  # type: ignore[no-any-return]
    request.getfixturevalue("token_service").anonymous_pull = False
    return request.getfixturevalue("token_registry")  # type: ignore[no-any-return]


@pytest.fixture
def private_base(private_registry: RegistryServer, base: str, tmp_path: Path) -> str:
    """The busybox base pushed to a private registry, and absent from the engine."""
    ref = f"{private_registry.host}/session/base:{unique()}"
    config = tmp_path / "push-config"
    config.mkdir()
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    subprocess.run(["docker", "tag", base, ref], check=True)
    subprocess.run(["docker", "login", "-u", AUTH_USER, "--password-stdin", private_registry.host], input=AUTH_PASSWORD,
                   text=True, env=env, check=True, capture_output=True)
    pushed = subprocess.run(["docker", "push", ref], env=env, capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr
    remove(ref)
    return ref


def test_credentials_from_the_callback_pull_a_private_base(private_base: str, private_registry: RegistryServer,
                                                           image: str) -> None:
    host = private_registry.host
    dockerfile = f"FROM {private_base}\nRUN echo built > /built\n"
    with Session(connect_engine, credentials=anonymous) as session:
        image_id, error, _ = build(session.id, dockerfile)
    assert image_id is None
    assert "no active sessions" not in error
    assert any(words in error for words in ("401 Unauthorized", "authorization failed")), error

    def broken(host: str) -> tuple[str, str]:
        raise KeyError("a credential helper that failed")

    with Session(connect_engine, credentials=broken) as session:
        image_id, error, _ = build(session.id, dockerfile)
    assert image_id is None
    assert f"imgctl could not read the credentials for {host} (KeyError)" in error
    assert {what for what, _ in session.failures} == {f"credentials for {host}"}

    asked: list[str] = []

    def lookup(asked_for: str) -> tuple[str, str] | None:
        asked.append(asked_for)
        return (AUTH_USER, AUTH_PASSWORD) if asked_for == host else None

    tokens = len(private_registry.service.issued(AUTH_USER)) if isinstance(private_registry, TokenRegistry) else 0
    with Session(connect_engine, credentials=lookup) as session:
        image_id, error, output = build(session.id, dockerfile, tag=image)
    assert not error and image_id, error
    assert set(asked) == {host}
    assert AUTH_PASSWORD not in output
    assert run(image, "cat", "/built").strip() == "built"
    if isinstance(private_registry, TokenRegistry):
        # Told UNIMPLEMENTED, the daemon asked Credentials and fetched the token itself.
        assert session.calls["/moby.filesync.v1.Auth/GetTokenAuthority"] >= 1
        assert len(private_registry.service.issued(AUTH_USER)) > tokens


def test_the_session_ends_with_its_build_on_every_path(base: str) -> None:
    for dockerfile in (f"FROM {base}\nRUN true\n", f"FROM {base}\nRUN exit 3\n"):
        connect = Recording()
        with Session(connect, credentials=anonymous) as session:
            image_id, error, _ = build(session.id, dockerfile)
            assert session.alive
        assert (image_id is None) == bool(error)
        assert not session.alive
        assert [sock.fileno() for sock in connect.sockets] == [-1]

    # The client gives up mid-build (an exception, Ctrl-C): the build's stream and the session close.
    connect = Recording()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="given up"):
        with Session(connect, credentials=anonymous) as session:
            response = post_build(session.id, f"FROM {base}\nRUN echo sleeping && sleep 60\n")
            with response:
                for line in response.iter_lines():
                    trace = json.loads(line).get("aux") or ""
                    if isinstance(trace, str) and b"sleeping\n" in base64.b64decode(trace):  # the step's own output
                        raise RuntimeError("given up")
    assert not session.alive
    assert [sock.fileno() for sock in connect.sockets] == [-1]
    assert time.monotonic() - started < 20


def test_two_sessions_at_once_each_serve_their_own_build(base: str) -> None:
    results: dict[str, tuple[str | None, str, str]] = {}
    served: dict[str, int] = {}
    values = {name: secrets.token_hex(16).encode() for name in ("one", "two")}
    tags = {name: f"imgctl-session-out:{unique(name)}" for name in values}

    def one_build(name: str) -> None:
        with Session(connect_engine, credentials=anonymous, secrets={"tok": values[name]}, name=name) as session:
            # Steps alike but for the secret would be one step to BuildKit: it merges identical
            # vertices of concurrent builds, and a secret is not part of a step's identity.
            dockerfile = f"FROM {base}\nRUN --mount=type=secret,id=tok sleep 2 && echo {name} && sha256sum /run/secrets/tok | cut -d' ' -f1 > /hash\n"
            results[name] = (*build(session.id, dockerfile, tag=tags[name])[:2], session.id)
            served[name] = session.calls[SECRET]

    threads = [threading.Thread(target=one_build, args=(name,)) for name in values]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert time.monotonic() - started < 4 + 2 * 2  # they overlapped
        assert results["one"][2] != results["two"][2]
        assert served == {"one": 1, "two": 1}
        for name, value in values.items():
            image_id, error, _ = results[name]
            assert not error and image_id, error
            assert run(tags[name], "cat", "/hash").strip() == hashlib.sha256(value).hexdigest()
    finally:
        remove(*tags.values())
