"""BuildKit's build stream, read into the same events as the classic builder's.

The engine answers `POST /build?version=2` with JSON records like the classic builder's, but the
progress comes in `{"id": "moby.buildkit.trace", "aux": "<base64>"}` records: a protobuf
`StatusResponse` (moby/buildkit, api/services/control) of vertexes (the steps: "[2/3] RUN ...")
and their logs (the output of RUN). The image id comes as `{"id": "moby.image.id", "aux": {"ID": ...}}`
and a failure as the usual `error`/`errorDetail` record. Pure and fed record by record, so
recorded streams test it; only the few protobuf fields read here are decoded.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from imgctl.events import BuildOutput, BuildStep, Event
from imgctl.streams import BuildParser, last_state
from imgctl.session.proto import fields  # the same protobuf wire format as the session's

# "[2/3] RUN make", "[stage-1 2/3] COPY . /app", "[internal] load build definition from Dockerfile"
_STEP = re.compile(r"^\[(?:\S+ )?(\d+)/(\d+)\] (.*)$", re.S)


@dataclass
class Vertex:
    digest: str
    name: str = ""
    cached: bool = False
    started: bool = False
    completed: bool = False
    error: str = ""


@dataclass
class Log:
    vertex: str
    msg: bytes


def _text(value: int | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def decode_status(data: bytes) -> tuple[list[Vertex], list[Log]]:
    """The vertexes and logs of a StatusResponse; raises ValueError on bytes that are not one."""
    vertexes: list[Vertex] = []
    logs: list[Log] = []
    for number, value in fields(data):
        if number == 1 and isinstance(value, bytes):  # Vertex
            vertex = Vertex(digest="")
            for n, v in fields(value):
                if n == 1:
                    vertex.digest = _text(v)
                elif n == 3:
                    vertex.name = _text(v)
                elif n == 4:
                    vertex.cached = bool(v)
                elif n == 5:
                    vertex.started = True
                elif n == 6:
                    vertex.completed = True
                elif n == 7:
                    vertex.error = _text(v)
            vertexes.append(vertex)
        elif number == 3 and isinstance(value, bytes):  # VertexLog
            log = Log(vertex="", msg=b"")
            for n, v in fields(value):
                if n == 1:
                    log.vertex = _text(v)
                elif n == 4 and isinstance(v, bytes):
                    log.msg = v
            logs.append(log)
    return vertexes, logs


class BuildKitStreamParser(BuildParser):
    """Reads a BuildKit build stream: steps, output lines, the image id, or the error."""

    def __init__(self, image: str, *, keep_lines: int = 40) -> None:
        super().__init__(image, keep_lines=keep_lines)
        self._seen: set[str] = set()
        self._names: dict[str, str] = {}
        self._partial: dict[str, str] = {}  # per vertex: output after its last line end

    def handle(self, record: dict[str, Any]) -> list[Event]:
        if self._failed(record):
            return self._flush()
        aux = record.get("aux")
        if record.get("id") == "moby.image.id" and isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        elif record.get("id") == "moby.buildkit.trace" and isinstance(aux, str):
            try:
                vertexes, logs = decode_status(base64.b64decode(aux, validate=True))
            except (ValueError, binascii.Error):
                return []  # progress only: the outcome comes in its own records
            # A vertex's output may come with the record that says it completed: announce, print, then
            # end its last line, as the classic builder's next step does.
            events = self._vertexes(vertexes) + self._logs(logs)
            for vertex in vertexes:
                if vertex.completed and vertex.digest in self._partial:
                    events.append(self._line(self._partial.pop(vertex.digest)))
            return events
        return []

    def _vertexes(self, vertexes: list[Vertex]) -> list[Event]:
        events: list[Event] = []
        for vertex in vertexes:
            if vertex.name:
                self._names[vertex.digest] = vertex.name
            if vertex.error:
                self.step = self._names.get(vertex.digest, self.step)
            if vertex.digest in self._seen or not (vertex.started or vertex.cached):
                continue
            self._seen.add(vertex.digest)
            match = _STEP.match(vertex.name)
            if match:
                self.step = vertex.name
                events.append(BuildStep(image=self.image, step=int(match.group(1)), total=int(match.group(2)),
                                        instruction=match.group(3)))
                if vertex.cached:  # as BuildKit's own progress says it: a step taken from the cache is news
                    events.append(BuildOutput(image=self.image, line="CACHED"))
            else:
                events.append(BuildOutput(image=self.image, line=vertex.name, internal=True))
                if vertex.cached:
                    events.append(BuildOutput(image=self.image, line="CACHED", internal=True))
        return events

    def _logs(self, logs: list[Log]) -> list[Event]:
        events: list[Event] = []
        for log in logs:
            text = self._partial.pop(log.vertex, "") + log.msg.decode("utf-8", "replace")
            *lines, rest = text.split("\n")
            if rest:
                self._partial[log.vertex] = rest
            events.extend(self._line(line) for line in lines)
        return events

    def _line(self, raw: str) -> Event:
        return self._output(last_state(raw))

    def _flush(self) -> list[Event]:
        events = [self._line(rest) for rest in self._partial.values()]
        self._partial.clear()
        return events
