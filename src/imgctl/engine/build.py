"""Engine's builds: the build context sent to the classic builder or to BuildKit, and the build's
stream read as its result, where any error fails the build and its words give the hint."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping

import docker
import docker.errors
import requests

from imgctl.buildkit import BuildKitStreamParser
from imgctl.context import build_context
from imgctl.engine.buildkit import BuildKit, CredentialsFor
from imgctl.engine.replies import CredentialStoreError, StoreError, explain, records, short
from imgctl.errors import BuildFailed, EngineUnavailable
from imgctl.events import BuildDone, Event
from imgctl.plan import PlannedImage
from imgctl.platforms import Platform
from imgctl.snapshot import Snapshot
from imgctl.streams import BuildParser, BuildStreamParser, StreamGarbled

Emit = Callable[[Event], None]


class BuildMixin:
    """Engine's build methods, a mixin (as docker-py's APIClient is made of BuildApiMixin and others)."""

    _api: Callable[[str], docker.APIClient]
    _answers: Callable[[], bool]
    _buildkit: BuildKit

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
            for record in records(stream):
                for event in parser.handle(record):
                    emit(event)
        except BuildFailed as exc:  # a context problem, found before or during the upload
            raise BuildFailed(f"build of {image.name} failed: {exc.message}") from None
        except docker.errors.APIError as exc:
            raise BuildFailed(f"build of {image.name} failed: {explain(exc)}") from None
        except StoreError as exc:
            raise CredentialStoreError(f"docker credential helper failed: {short(exc)}") from None
        except (requests.RequestException, StreamGarbled) as exc:
            if not self._answers():
                raise EngineUnavailable(f"the Docker engine stopped during the build of {image.name}: {short(exc)}") from None
            raise BuildFailed(f"build of {image.name} lost the engine: {short(exc)}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise BuildFailed(f"build of {image.name} failed: {short(exc)}") from None
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
