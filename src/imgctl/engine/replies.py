"""What docker-py hands back, in imgctl's terms: its exceptions as imgctl's errors, its byte
streams as JSON records (where the errors it does not raise are found)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import docker.errors

from imgctl.dockerconfig import CredentialHelperError
from imgctl.errors import EngineUnavailable
from imgctl.streams import JsonStreamDecoder

try:  # docker-py vendors its credential-helper client here
    from docker.credentials.errors import StoreError
except ImportError:  # pragma: no cover
    StoreError = docker.errors.DockerException  # type: ignore[misc,assignment]


CredentialStoreError = CredentialHelperError  # a helper named by the docker config is missing or failed


def unavailable(exc: BaseException) -> EngineUnavailable:
    return EngineUnavailable(f"cannot reach the Docker engine: {short(exc)}")


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def records(stream: Iterable[Any]) -> Iterator[dict[str, Any]]:
    decoder = JsonStreamDecoder()
    for chunk in stream:
        if isinstance(chunk, dict):
            yield chunk
            continue
        yield from decoder.feed(chunk)
    yield from decoder.close()


def explain(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc).strip()
