"""The one door to the Docker Engine: the only module that imports docker-py.

It turns docker-py's exceptions, and the errors hidden inside its streams, into imgctl's errors.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import docker
import docker.errors
import requests

from imgctl import dockerconfig
from imgctl.auth import Credentials
from imgctl.buildkit import BuildKitStreamParser
from imgctl.engine.buildkit import BuildKit, CredentialsFor
from imgctl.context import build_context
from imgctl.dockerconfig import CredentialHelperError
from imgctl.dockerfile import split_reference
from imgctl.errors import AuthFailed, BuildFailed, EngineUnavailable, ImgctlError, PushFailed, RegistryError
from imgctl.events import BuildDone, Event, PushDone, PushStarted
from imgctl.plan import PlannedImage, PlannedTag
from imgctl.platforms import Platform
from imgctl.refs import is_docker_hub
from imgctl.retry import classify_text, is_auth_text
from imgctl.snapshot import Snapshot
from imgctl.streams import BuildParser, BuildStreamParser, JsonStreamDecoder, PushStreamParser, StreamGarbled

Emit = Callable[[Event], None]

# docker-py also prints a Python warning for a missing credential helper; imgctl reports it itself.
warnings.filterwarnings("ignore", message=r"docker-credential-.* not installed", category=UserWarning)

try:  # docker-py vendors its credential-helper client here
    from docker.credentials.errors import StoreError
except ImportError:  # pragma: no cover
    StoreError = docker.errors.DockerException  # type: ignore[misc,assignment]


CredentialStoreError = CredentialHelperError  # a helper named by the docker config is missing or failed


def _unavailable(exc: BaseException) -> EngineUnavailable:
    return EngineUnavailable(f"cannot reach the Docker engine: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


class Engine:
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
                raise _unavailable(exc) from None
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
                raise _unavailable(exc) from None
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
            raise _unavailable(exc) from None
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
            raise _unavailable(exc) from None

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

    def build(
        self, image: PlannedImage, *, no_cache: bool, pull: bool, emit: Emit, extra_labels: dict[str, str] | None = None,
        builder: str = "classic", platform: Platform | None = None, build_args: dict[str, str] | None = None,
        cache_from: list[str] | None = None, credentials: CredentialsFor = lambda host: None,
        secrets: Mapping[str, bytes] | None = None, ssh: Mapping[str, str] | None = None,
        snapshot: Snapshot | None = None,
    ) -> str:
        """Build with live output; return the image id. Any error in the stream fails the build.
        `build_args` replace the image's own (a multi-platform build adds TARGETPLATFORM and friends).
        With a `snapshot` of the context (snapshot.py), its kept tar is sent rather than the tree walked again."""
        args = dict(image.build_args if build_args is None else build_args)
        started = time.monotonic()
        buildkit = builder == "buildkit"
        parser: BuildParser = BuildKitStreamParser(image.name) if buildkit else BuildStreamParser(image.name)
        try:
            # The context is streamed while the tree is walked (docker-py would write a temp tar first).
            context, dockerfile, labels = build_context(
                image.context, image.dockerfile, {**image.labels, **(extra_labels or {})}, image.target,
                fold_labels=not buildkit, snapshot=snapshot,
            )
            if buildkit:
                if image.inline_cache:  # the cache metadata goes into the image, for a later cache_from
                    args = {**args, "BUILDKIT_INLINE_CACHE": "1"}
                stream = self._buildkit.build(
                    context, dockerfile, image, labels, args, platform, no_cache=no_cache, pull=pull,
                    credentials=credentials, secrets=secrets or {}, ssh=ssh or {},
                    cache_from=[*(cache_from or []), *image.cache_from],
                )
            else:
                stream = self._api("build").build(
                    fileobj=context, custom_context=True, encoding=None,
                    dockerfile=dockerfile, target=image.target,
                    buildargs=args, labels=labels, platform=str(platform) if platform else None,
                    # several platforms: only each one's own last build (multiplatform.py says why)
                    cache_from=cache_from if platform is not None else list(image.cache_from) or None,
                    rm=True, forcerm=True, nocache=no_cache, pull=pull, decode=False,
                )
            for record in _records(stream):
                for event in parser.handle(record):
                    emit(event)
        except BuildFailed as exc:  # a context problem, found before or during the upload
            raise BuildFailed(f"build of {image.name} failed: {exc.message}") from None
        except docker.errors.APIError as exc:
            raise BuildFailed(f"build of {image.name} failed: {_explain(exc)}") from None
        except StoreError as exc:
            raise CredentialStoreError(f"docker credential helper failed: {_short(exc)}") from None
        except (requests.RequestException, StreamGarbled) as exc:
            if not self._answers():
                raise EngineUnavailable(f"the Docker engine stopped during the build of {image.name}: {_short(exc)}") from None
            raise BuildFailed(f"build of {image.name} lost the engine: {_short(exc)}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise BuildFailed(f"build of {image.name} failed: {_short(exc)}") from None
        try:
            events, image_id = parser.finish()
        except BuildFailed as exc:
            if not self._answers():
                raise EngineUnavailable(f"the Docker engine stopped during the build of {image.name}: {exc.message}") from None
            if "non-zero code: 137" in exc.message or "exit code: 137" in exc.message:  # classic, BuildKit
                exc.hint = "137 means the step was killed: out of memory, or the engine stopped"
            said = "\n".join([exc.message, *exc.output])
            if re.search(r"secret \S+ not found", said):
                exc.hint = "the Dockerfile requires a secret nobody gives: name it in the image's secrets: ({env: VAR} or {file: PATH})"
            if "unset ssh forward key" in said:
                exc.hint = "the Dockerfile mounts an SSH agent nobody gives: name it in the image's ssh: (default, or {id: socket})"
            if platform is not None and ("exec format error" in said or re.search(r"exec \S+: no such file or directory", said)):
                # the second is what an emulator registered without the F flag gives in a FROM scratch image
                exc.hint = (f"the engine cannot run {platform} programs: install QEMU user emulation "
                            "(Debian's qemu-user-static, registered with the F flag; scripts/setup.sh does it, "
                            "as docker/setup-qemu-action does on CI)")
            raise
        for event in events:
            emit(event)
        emit(BuildDone(image=image.name, image_id=image_id, seconds=time.monotonic() - started))
        return image_id

    def cancel_builds(self) -> None:
        """Cancel the BuildKit builds under way (an interrupt): they stop at once."""
        self._buildkit.cancel()

    def tag(self, image_id: str, tag: PlannedTag) -> None:
        try:
            self._api("control").tag(image_id, tag.repository, tag.tag, force=True)
        except requests.RequestException as exc:
            if not self._answers():
                raise EngineUnavailable(f"the Docker engine stopped before {tag.reference} was tagged: {_short(exc)}") from None
            raise ImgctlError(f"tagging {tag.reference} failed: {_short(exc)}") from None
        except docker.errors.DockerException as exc:
            raise ImgctlError(f"tagging {tag.reference} failed: {_short(exc)}") from None

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
            text = _explain(exc)
            transient, _ = classify_text(text)
            if "401" in text or "unauthorized" in text.lower() or "denied" in text.lower() or not transient:
                raise AuthFailed(
                    f"registry {host} refused user {creds.username!r} (credentials from {creds.source})",
                    hint="Check the username and token; for Docker Hub use an access token with write scope.",
                ) from None
            raise RegistryError(f"login to {host} failed: {text}", transient=True) from None
        except requests.RequestException as exc:
            raise _unavailable(exc) from None

    def insecure_registries(self) -> frozenset[str]:
        """The registries the daemon speaks plain HTTP to (`docker info`): imgctl's own requests do too."""
        from imgctl.transport import insecure_registries

        try:
            return insecure_registries(self._api("control").info())
        except (docker.errors.DockerException, requests.RequestException):
            return frozenset()

    def push(self, image: str, tag: PlannedTag, creds: Credentials | None, emit: Emit) -> tuple[str, int | None]:
        """Push one tag with live layer progress; return (digest, size) taken from the stream."""
        emit(PushStarted(image=image, reference=tag.reference))
        parser = PushStreamParser(image, tag.reference)
        try:
            stream = self._api("push").push(
                tag.repository, tag=tag.tag, stream=True, decode=False,
                # Always explicit: with None, docker-py would look the docker config up its own way.
                # {} is an anonymous push, as imgctl's own requests are then.
                auth_config=creds.as_auth_config() if creds else {},
            )
            for record in _records(stream):
                for event in parser.handle(record):
                    emit(event)
        except docker.errors.APIError as exc:
            text = _explain(exc)
            transient, retry_after = classify_text(text)
            raise PushFailed(f"push of {tag.reference} failed: {text}", transient=transient, retry_after=retry_after) from None
        except StoreError as exc:
            raise CredentialStoreError(f"docker credential helper failed: {_short(exc)}") from None
        try:
            digest, size = parser.finish()
        except PushFailed:
            if parser.error and is_auth_text(parser.error):
                who = f"user {creds.username!r} (from {creds.source})" if creds else "anonymous push (no credentials found)"
                raise AuthFailed(
                    f"registry {tag.host} refused {who}: {parser.error}",
                    hint="Set the variables named by auth.username_env/auth.password_env, or `docker login` first.",
                ) from None
            raise
        emit(PushDone(image=image, reference=tag.reference, digest=digest, size=size))
        return digest, size

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
            raise _unavailable(exc) from None
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
            return _short(exc)
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


def _records(stream: Iterable[Any]) -> Iterator[dict[str, Any]]:
    decoder = JsonStreamDecoder()
    for chunk in stream:
        if isinstance(chunk, dict):
            yield chunk
            continue
        yield from decoder.feed(chunk)
    yield from decoder.close()


def _explain(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc).strip()
