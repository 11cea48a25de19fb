"""Builds through the engine's BuildKit (`POST /build?version=2`), which docker-py's build() does
not offer: one request on docker-py's own connection, the streamed context as its body, and a
BuildKit session beside it (imgctl.session) through which BuildKit asks imgctl for registry
credentials, build secrets and the SSH agent. BuildKit commits no container per instruction."""

from __future__ import annotations

import itertools
import json
import secrets as random
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import docker
import docker.errors
import requests

from imgctl.auth import Credentials
from imgctl.tarstream import root_entry
from imgctl.errors import BuildFailed
from imgctl.plan import PlannedImage
from imgctl.platforms import Platform
from imgctl.refs import is_docker_hub
from imgctl.session import Session

CredentialsFor = Callable[[str], Credentials | None]  # a registry host -> what to send it


class BuildKit:
    def __init__(self, api: Callable[[str], docker.APIClient]) -> None:
        self._api = api
        self._network: str | None = None  # the network RUN steps get (see _build_network)
        self._running: set[str] = set()  # buildids of the builds under way
        self._lock = threading.Lock()

    def build(
        self, context: Iterable[bytes], dockerfile: str, image: PlannedImage, labels: dict[str, str],
        args: dict[str, str], platform: Platform | None, *, no_cache: bool, pull: bool,
        credentials: CredentialsFor, secrets: Mapping[str, bytes], ssh: Mapping[str, str],
        cache_from: list[str] | None = None,
    ) -> Iterator[bytes]:
        """The build's stream; its session lives exactly as long as the stream is read."""
        api = self._api("build")
        params = {
            "version": "2", "dockerfile": dockerfile, "buildargs": json.dumps(args),
            "labels": json.dumps(labels), "nocache": int(no_cache), "pull": int(pull), "rm": 1, "forcerm": 1,
            "networkmode": self._build_network(),
        }
        if image.target:
            params["target"] = image.target
        if platform is not None:
            params["platform"] = str(platform)
        if cache_from:
            params["cachefrom"] = json.dumps(cache_from)
        buildid = params["buildid"] = random.token_hex(16)
        with Session(self._socket, credentials=_answer(credentials), secrets=secrets, ssh=ssh) as session:
            params["session"] = session.id
            response = api.post(
                f"{api.base_url}/v{api.api_version}/build", params=params,
                data=itertools.chain([root_entry(image.context)], context),
                headers={"Content-Type": "application/x-tar"}, stream=True, timeout=None,
            )
            if response.status_code >= 400:  # e.g. a Dockerfile that does not parse
                try:
                    message = str(response.json().get("message") or response.text)
                except ValueError:
                    message = response.text
                finally:
                    response.close()
                raise BuildFailed(message.strip() or f"the engine answered {response.status_code}")
            with self._lock:
                self._running.add(buildid)
            try:
                yield from response.iter_content(chunk_size=None)
            finally:
                with self._lock:
                    self._running.discard(buildid)
                response.close()

    def cancel(self) -> None:
        """Cancel every build under way (SIGINT, SIGTERM): BuildKit stops at once and the build
        fails, where the classic builder has to be waited for."""
        with self._lock:
            running = list(self._running)
        for buildid in running:
            try:
                api = self._api("control")
                api.post(f"{api.base_url}/v{api.api_version}/build/cancel", params={"id": buildid}).close()
            except (docker.errors.DockerException, requests.RequestException):
                pass  # the build ends with its stream anyway

    def _build_network(self) -> str:
        """BuildKit's RUN steps join the engine's default bridge network, and fail when the engine
        runs without one (`dockerd --bridge=none`); the classic builder gives them none there."""
        if self._network is None:
            try:
                self._api("control").inspect_network("bridge")
                self._network = "default"
            except docker.errors.NotFound:
                self._network = "none"
        return self._network

    def _socket(self) -> socket.socket:
        """A connection of the session's own to the engine, where docker-py's client connects:
        the session upgrades it to HTTP/2, which docker-py's pooled connections cannot carry."""
        api = self._api("control")
        path = getattr(api.get_adapter(api.base_url), "socket_path", None)
        if path:  # unix socket (docker-py's UnixHTTPAdapter)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            return sock
        url = urlsplit(api.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise OSError(f"a BuildKit session cannot reach the engine at {api.base_url}")
        sock = socket.create_connection((url.hostname, url.port or (2376 if url.scheme == "https" else 2375)))
        if url.scheme == "https":  # DOCKER_TLS_VERIFY: docker-py's CA and client certificate
            verify = api.verify
            context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            if api.cert:
                context.load_cert_chain(*api.cert) if isinstance(api.cert, tuple) else context.load_cert_chain(api.cert)
            sock = context.wrap_socket(sock, server_hostname=url.hostname)
        return sock


def _answer(credentials: CredentialsFor) -> Callable[[str], tuple[str, str] | None]:
    """What the session answers BuildKit's Credentials call with, as the docker CLI does: Docker
    Hub by any of its names, and an identity token as the secret with no username."""

    def lookup(host: str) -> tuple[str, str] | None:
        found = credentials("docker.io" if is_docker_hub(host) else host)
        if found is None:
            return None
        if found.identity_token:
            return "", found.identity_token
        return found.username, found.password

    return lookup
