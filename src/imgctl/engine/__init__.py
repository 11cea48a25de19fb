"""The one door to the Docker Engine: the only package that imports docker-py.

It turns docker-py's exceptions, and the errors hidden inside its streams, into imgctl's errors
(replies.py). Engine is what the rest of imgctl calls; its builds are in build.py, its pushes in push.py.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import docker
import docker.errors
import requests

from imgctl import dockerconfig
from imgctl.auth import Credentials
from imgctl.dockerfile import split_reference
from imgctl.engine.build import BuildMixin
from imgctl.engine.buildkit import BuildKit
from imgctl.engine.push import PushMixin
from imgctl.engine.replies import CredentialStoreError, explain, short, unavailable
from imgctl.errors import AuthFailed, EngineUnavailable, ImgctlError, RegistryError
from imgctl.plan import PlannedTag
from imgctl.platforms import Platform
from imgctl.refs import is_docker_hub
from imgctl.retry import classify_text

# docker-py also prints a Python warning for a missing credential helper; imgctl reports it itself.
warnings.filterwarnings("ignore", message=r"docker-credential-.* not installed", category=UserWarning)


class Engine(BuildMixin, PushMixin):
    """docker-py clients per thread: a short timeout for control calls, a long one for pushes."""

    def __init__(self, *, push_timeout: float = 300.0, control_timeout: float = 30.0) -> None:
        self.push_timeout = push_timeout
        self.control_timeout = control_timeout
        self._local = threading.local()
        self._version: str | None = None  # the API version the first client agreed with the engine
        self._platform: Platform | None = None
        self._buildkit = BuildKit(self._api)

    def _api(self, kind: str) -> docker.APIClient:
        clients = self._local.__dict__.setdefault("clients", {})
        if kind not in clients:
            timeout = {"control": self.control_timeout, "push": self.push_timeout, "build": None}[kind]
            # Until one client has agreed a version with the engine (None: ask it), every new client
            # (one per thread and kind) would ask again.
            options = {"timeout": timeout} if timeout else {}
            try:
                client = docker.from_env(version=self._version, **options)
            except docker.errors.DockerException as exc:
                raise unavailable(exc) from None
            if timeout is None:
                client.api.timeout = None  # builds may print nothing for a long time
            self._version = self._version or client.api.api_version
            clients[kind] = client.api
        return clients[kind]

    def platform(self) -> Platform:
        """The engine's own platform: what BUILDPLATFORM names, and what runs without emulation."""
        if self._platform is None:
            try:
                found = self._api("control").version()
            except (docker.errors.DockerException, requests.RequestException) as exc:
                raise unavailable(exc) from None
            self._platform = Platform.parse(f"{found.get('Os', 'linux')}/{found.get('Arch', 'amd64')}")
        return self._platform

    def builder(self, wanted: str) -> str:
        """The builder a release uses: `wanted`, or for "auto" BuildKit where the engine has it,
        as the docker CLI decides: an engine that says its builder is BuildKit, else any engine
        but a Windows one that speaks API 1.39 (Docker 18.09, BuildKit's session) or later."""
        if wanted != "auto":
            return wanted
        api = self._api("control")
        try:
            ping = api.get(f"{api.base_url}/_ping", timeout=self.control_timeout)
            version = api.version()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise unavailable(exc) from None
        if ping.headers.get("Builder-Version") == "2":
            return "buildkit"
        os_type = (ping.headers.get("OSType") or str(version.get("Os", ""))).lower()
        api_version = tuple(int(p) for p in str(version.get("ApiVersion", "0.0")).split(".")[:2] if p.isdigit())
        return "buildkit" if os_type != "windows" and api_version >= (1, 39) else "classic"

    def connect(self) -> str:
        """Check that the engine answers; return its version."""
        try:
            return str(self._api("control").version().get("Version", "?"))
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise unavailable(exc) from None

    def _answers(self) -> bool:
        """Does the engine answer on a new connection? (A pooled one may outlive a stopping daemon.)"""
        try:
            return bool(docker.from_env(timeout=5).ping())
        except (docker.errors.DockerException, requests.RequestException):
            return False

    def check_docker_config(self) -> None:
        """Fail early and clearly if the docker config names a credential helper that is not installed.

        docker-py runs every helper the config names on each classic build (it sends the engine all
        stored credentials, for base images) and raises StoreError from deep inside.
        """
        missing = dockerconfig.missing_helpers()
        if missing:
            named = "; ".join(f"{dockerconfig.HELPER_PREFIX}{name} (from {', '.join(where)})" for name, where in missing.items())
            raise CredentialStoreError(f"docker credential helper not installed: {named}, in {dockerconfig.config_path()}")

    def tag(self, image_id: str, tag: PlannedTag) -> None:
        try:
            self._api("control").tag(image_id, tag.repository, tag.tag, force=True)
        except requests.RequestException as exc:
            if not self._answers():
                raise EngineUnavailable(f"the Docker engine stopped before {tag.reference} was tagged: {short(exc)}") from None
            raise ImgctlError(f"tagging {tag.reference} failed: {short(exc)}") from None
        except docker.errors.DockerException as exc:
            raise ImgctlError(f"tagging {tag.reference} failed: {short(exc)}") from None

    def login(self, host: str, creds: Credentials) -> None:
        """Check credentials with the registry now, through the engine (POST /auth).

        Not docker-py's login(): it cannot send an identity token, it answers from its cache unless
        reauth, and it reads the docker config itself (raising StoreError for a missing helper).
        With an identity token the engine runs the OAuth2 refresh-token flow, as it does for a push.
        (_post_json/_url/_result are the very calls docker-py's login makes.)
        """
        payload: dict[str, str | None] = {**creds.as_auth_config(), "serveraddress": None if is_docker_hub(host) else host}
        api = self._api("control")
        try:
            api._result(api._post_json(api._url("/auth"), data=payload), json=True)
        except docker.errors.APIError as exc:
            text = explain(exc)
            transient, _ = classify_text(text)
            if "401" in text or "unauthorized" in text.lower() or "denied" in text.lower() or not transient:
                raise AuthFailed(
                    f"registry {host} refused user {creds.username!r} (credentials from {creds.source})",
                    hint="Check the username and token; for Docker Hub use an access token with write scope.",
                ) from None
            raise RegistryError(f"login to {host} failed: {text}", transient=True) from None
        except requests.RequestException as exc:
            raise unavailable(exc) from None

    def insecure_registries(self) -> frozenset[str]:
        """The registries the daemon speaks plain HTTP to (`docker info`): imgctl's own requests do too."""
        from imgctl.transport import insecure_registries

        try:
            return insecure_registries(self._api("control").info())
        except (docker.errors.DockerException, requests.RequestException):
            return frozenset()

    def inspect(self, image_id: str) -> dict[str, Any]:
        try:
            found = self._api("control").inspect_image(image_id)
        except (docker.errors.DockerException, requests.RequestException):
            return {}
        return found if isinstance(found, dict) else {}

    def history(self, reference: str) -> list[dict[str, Any]]:
        """The layers of a local image, newest first: what `docker history` shows."""
        try:
            layers = self._api("control").history(reference)
        except docker.errors.ImageNotFound:
            raise ImgctlError(f"no local image {reference}", hint="Build it first (imgctl release --no-push), or pull it.") from None
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise unavailable(exc) from None
        return list(layers or [])

    def pull(self, reference: str, creds: Credentials | None = None) -> str | None:
        """Pull an image; None if that worked, else what went wrong (errors arrive inside the stream).
        Without credentials the pull is anonymous: docker-py would look the docker config up its own way."""
        auth = creds.as_auth_config() if creds else {}
        try:
            for record in self._api("build").pull(reference, stream=True, decode=True, auth_config=auth):
                if isinstance(record, dict) and record.get("error"):
                    return str(record["error"])
        except (docker.errors.DockerException, requests.RequestException) as exc:
            return short(exc)
        return None

    def local_image_id(self, reference: str) -> str | None:
        """The id of a local image; None if there is none."""
        found = self.inspect(reference).get("Id")
        return found if isinstance(found, str) else None

    def pushed_digests(self, image_id: str, repository: str) -> set[str]:
        """Manifest digests this very image was pushed as to `repository` (the engine's RepoDigests)."""
        wanted = split_reference(repository)
        found = set()
        for entry in self.inspect(image_id).get("RepoDigests") or []:
            name, _, digest = str(entry).partition("@")
            if digest and split_reference(name) == wanted:
                found.add(digest)
        return found
