"""Typed events: what a release or a promotion reports, as it happens, to the renderers.

Each event is a frozen dataclass; its `type` in JSON is its class name in snake case, and
`events_json_schema` describes them all for `--output json`. The parsers that read docker's
streams into events are streams.py's.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Every event class is a frozen dataclass whose __eq__, __hash__ and __repr__ are Event's, written
# once over its fields. dataclass() writes (and compiles) those three anew for each class it
# decorates; for these 24 classes that was a third of the module's import, which every command pays.
_event = dataclass(frozen=True, kw_only=True, eq=False, repr=False)


def type_name(cls: type) -> str:
    """`LayerProgress` -> `layer_progress`: an event's `type` in JSON."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", cls.__name__).lower()


@_event
class Event:
    image: str | None = None
    time: float = field(default_factory=time.time)
    platform: str | None = None  # which platform's build or push of a multi-platform image

    @property
    def type(self) -> str:
        return type_name(type(self))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{type(self).__qualname__}({shown})"


@_event
class ImageStarted(Event):
    action: str = "build"  # or "promote": what the image's run does


@_event
class BuildStep(Event):
    step: int
    total: int
    instruction: str


@_event
class BuildOutput(Event):
    line: str
    internal: bool = False  # the builder's own " ---> abc123" bookkeeping


@_event
class BuildDone(Event):
    image_id: str
    seconds: float


@_event
class Tagged(Event):
    reference: str


@_event
class LoggedIn(Event):
    registry: str
    username: str
    source: str


@_event
class PushStarted(Event):
    reference: str


@_event
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


@_event
class PushDone(Event):
    reference: str
    digest: str
    size: int | None


@_event
class Verified(Event):
    reference: str
    digest: str


@_event
class TagAdded(Event):
    """The image was in the tag's repository already (pushed under another tag, or reused): the
    tag was added with one manifest PUT, without a push."""

    reference: str
    digest: str


@_event
class IndexPushed(Event):
    """A multi-platform image's index, assembled in the registry from its platforms' images."""

    repository: str
    digest: str
    platforms: dict[str, dict[str, Any]]  # platform -> {"digest": ..., "size": ...}


@_event
class SourceResolved(Event):
    """What an image is promoted from: the source tag and the digest it holds (found before anything moves)."""

    reference: str
    digest: str
    media_type: str


@_event
class BlobCopied(Event):
    """One blob put in a destination repository: `present` (it was there), `mounted` or `streamed`."""

    reference: str  # the destination repository
    digest: str
    size: int
    how: str


@_event
class Reused(Event):
    """--skip-unchanged: the registry holds an image built from the same inputs; no build."""

    inputs: str


@_event
class Unchanged(Event):
    """The registry already holds this image under this tag: nothing to push."""

    reference: str
    digest: str


@_event
class Retrying(Event):
    action: str
    attempt: int
    attempts: int
    wait: float
    reason: str


@_event
class ImageFailed(Event):
    stage: str
    error: str
    output: tuple[str, ...] = ()


@_event
class ImageSkipped(Event):
    reason: str


@_event
class ImageDone(Event):
    digests: dict[str, str]


@_event
class FloatingHeld(Event):
    reason: str
    references: tuple[str, ...]


@_event
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
