"""Engine's pushes: the push's stream is its result, so an error inside it fails the push even
when docker-py returned normally, and the digest is the one the stream names."""

from __future__ import annotations

from collections.abc import Callable

import docker
import docker.errors

from imgctl.auth import Credentials
from imgctl.engine.replies import CredentialStoreError, StoreError, explain, records, short
from imgctl.errors import AuthFailed, PushFailed
from imgctl.events import Event, PushDone, PushStarted
from imgctl.plan import PlannedTag
from imgctl.retry import classify_text, is_auth_text
from imgctl.streams import PushStreamParser

Emit = Callable[[Event], None]


class PushMixin:
    """Engine's push method, a mixin like BuildMixin."""

    _api: Callable[[str], docker.APIClient]

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
            for record in records(stream):
                for event in parser.handle(record):
                    emit(event)
        except docker.errors.APIError as exc:
            text = explain(exc)
            transient, retry_after = classify_text(text)
            raise PushFailed(f"push of {tag.reference} failed: {text}", transient=transient, retry_after=retry_after) from None
        except StoreError as exc:
            raise CredentialStoreError(f"docker credential helper failed: {short(exc)}") from None
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
