"""Typed events: what a release or a promotion reports, as it happens, to the renderers.

Each event is a frozen dataclass; its `type` in JSON is its class name in snake case, and
`events_json_schema` describes them all for `--output json`. The parsers that read docker's
streams into events are streams.py's.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any


def type_name(cls: type) -> str:
    """`LayerProgress` -> `layer_progress`: an event's `type` in JSON."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", cls.__name__).lower()


@dataclass(frozen=True, kw_only=True)
class Event:
    image: str | None = None
    time: float = field(default_factory=time.time)
    platform: str | None = None  # which platform's build or push of a multi-platform image

    @property
    def type(self) -> str:
        return type_name(type(self))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True, kw_only=True)
class ImageStarted(Event):
    action: str = "build"  # or "promote": what the image's run does


@dataclass(frozen=True, kw_only=True)
class BuildStep(Event):
    step: int
    total: int
    instruction: str


@dataclass(frozen=True, kw_only=True)
class BuildOutput(Event):
    line: str
    internal: bool = False  # the builder's own " ---> abc123" bookkeeping


@dataclass(frozen=True, kw_only=True)
class BuildDone(Event):
    image_id: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Tagged(Event):
    reference: str


@dataclass(frozen=True, kw_only=True)
class LoggedIn(Event):
    registry: str
    username: str
    source: str


@dataclass(frozen=True, kw_only=True)
class PushStarted(Event):
    reference: str


@dataclass(frozen=True, kw_only=True)
class LayerProgress(Event):
    reference: str
    layer: str
    status: str
    current: int | None = None
    total: int | None = None

    @property
    def finished(self) -> bool:
        """The layer is in the registry: pushed now, already there, or mounted from another repository."""
        return self.status in ("Pushed", "Layer already exists") or self.status.startswith("Mounted from")


@dataclass(frozen=True, kw_only=True)
class PushDone(Event):
    reference: str
    digest: str
    size: int | None


@dataclass(frozen=True, kw_only=True)
class Verified(Event):
    reference: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class TagAdded(Event):
    """The image was in the tag's repository already (pushed under another tag, or reused): the
    tag was added with one manifest PUT, without a push."""

    reference: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class IndexPushed(Event):
    """A multi-platform image's index, assembled in the registry from its platforms' images."""

    repository: str
    digest: str
    platforms: dict[str, dict[str, Any]]  # platform -> {"digest": ..., "size": ...}


@dataclass(frozen=True, kw_only=True)
class SourceResolved(Event):
    """What an image is promoted from: the source tag and the digest it holds (found before anything moves)."""

    reference: str
    digest: str
    media_type: str


@dataclass(frozen=True, kw_only=True)
class BlobCopied(Event):
    """One blob put in a destination repository: `present` (it was there), `mounted` or `streamed`."""

    reference: str  # the destination repository
    digest: str
    size: int
    how: str


@dataclass(frozen=True, kw_only=True)
class Reused(Event):
    """--skip-unchanged: the registry holds an image built from the same inputs; no build."""

    inputs: str


@dataclass(frozen=True, kw_only=True)
class Unchanged(Event):
    """The registry already holds this image under this tag: nothing to push."""

    reference: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class Retrying(Event):
    action: str
    attempt: int
    attempts: int
    wait: float
    reason: str


@dataclass(frozen=True, kw_only=True)
class ImageFailed(Event):
    stage: str
    error: str
    output: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ImageSkipped(Event):
    reason: str


@dataclass(frozen=True, kw_only=True)
class ImageDone(Event):
    digests: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class FloatingHeld(Event):
    reason: str
    references: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Warning(Event):  # noqa: A001 - an event type, shadowing the builtin only inside this module
    message: str


def event_types() -> dict[str, type[Event]]:
    """Every event class by the `type` it carries in JSON."""
    found: dict[str, type[Event]] = {}
    stack = list(Event.__subclasses__())
    while stack:
        cls = stack.pop()
        found[type_name(cls)] = cls
        stack.extend(cls.__subclasses__())
    return found


def events_json_schema() -> dict[str, Any]:
    """The JSON Schema of `--output json` lines: one object per event, told apart by `type`."""
    from pydantic import TypeAdapter

    variants = []
    for name, cls in sorted(event_types().items()):
        schema = TypeAdapter(cls).json_schema()
        schema["properties"] = {"type": {"const": name}, **schema.get("properties", {})}
        schema["required"] = ["type", *schema.get("required", []), "image", "time"]
        schema["additionalProperties"] = False
        schema["title"] = name
        variants.append(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "imgctl event", "oneOf": variants}
