"""docker's JSON build and push streams, read into events.

The stream is the result: errors arrive inside it with HTTP 200, the image id and the push digest
arrive in `aux` records. Parsers are pure and fed chunk by chunk, so recorded streams test them.
BuildKit's stream has its own parser (buildkit.py), on the BuildParser base here.
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Any

from imgctl.errors import BuildFailed, PushFailed
from imgctl.events import BuildOutput, BuildStep, Event, LayerProgress
from imgctl.retry_classify import classify_text


class StreamGarbled(Exception):
    """The engine's JSON stream ended mid-record or held something that is not JSON."""


class JsonStreamDecoder:
    """Splits a byte stream into JSON objects, whatever the chunk boundaries.

    The engine ends every record with a newline and escapes newlines inside strings, so a complete
    line that does not parse is garbage, while an unfinished last line just waits for more bytes.
    """

    MAX_LINE = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._buffer = b""
        self._decoder = json.JSONDecoder()

    def feed(self, chunk: bytes | str) -> list[dict[str, Any]]:
        # surrogatepass: a str chunk holding lone surrogates then fails UTF-8 decoding as garbage
        self._buffer += chunk.encode("utf-8", "surrogatepass") if isinstance(chunk, str) else chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self.MAX_LINE:
            raise StreamGarbled(f"stream record longer than {self.MAX_LINE} bytes")
        out: list[dict[str, Any]] = []
        for line in lines:
            out.extend(self._parse_line(line))
        return out

    def close(self) -> list[dict[str, Any]]:
        """Records left in an unterminated last line; raises StreamGarbled if it was cut short."""
        rest, self._buffer = self._buffer, b""
        return self._parse_line(rest)

    def _parse_line(self, raw: bytes) -> list[dict[str, Any]]:
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise StreamGarbled(f"stream is not UTF-8 at byte {exc.start} of a record") from None
        out: list[dict[str, Any]] = []
        while text:
            try:
                obj, end = self._decoder.raw_decode(text)
            except (json.JSONDecodeError, RecursionError):  # deep nesting exhausts the C scanner
                raise StreamGarbled(f"stream record cut short or not JSON: {text[:80]!r}") from None
            if not isinstance(obj, dict):
                raise StreamGarbled(f"stream holds a JSON {type(obj).__name__}, not an object")
            out.append(obj)
            text = text[end:].lstrip()
        return out


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_BOOKKEEPING = (" ---> ", "Removing intermediate container ", "Successfully built ", "Successfully tagged ")


def last_state(raw: str) -> str:
    """A line as a terminal leaves it: `\r` progress ("10%\r50%\rdone") shows its last state."""
    return raw.rstrip("\r").split("\r")[-1]


class BuildParser:
    """What both builders' stream parsers share: the error record, the kept tail, the outcome."""

    def __init__(self, image: str, *, keep_lines: int = 40) -> None:
        self.image = image
        self.image_id: str | None = None
        self.error: str | None = None
        self.step: str | None = None  # the step last started (the failing one, once failed)
        self.tail: deque[str] = deque(maxlen=keep_lines)

    def _output(self, line: str, *, internal: bool = False) -> BuildOutput:
        """A line of output; the step's own lines are kept for the failure report."""
        if not internal:
            self.tail.append(line)
        return BuildOutput(image=self.image, line=line, internal=internal)

    def _failed(self, record: dict[str, Any]) -> bool:
        """Take the error of an error record; is it one?"""
        if "error" not in record and "errorDetail" not in record:
            return False
        detail = record.get("errorDetail")
        detail = detail if isinstance(detail, dict) else {}
        self.error = str(detail.get("message") or record.get("error") or "build failed")
        return True

    def _flush(self) -> list[Event]:
        """Events for output that has not ended its line yet."""
        return []

    def finish(self) -> tuple[list[Event], str]:
        """Events for any unterminated last line, and the image id; raises BuildFailed."""
        events = self._flush()
        if self.error is not None:
            where = f" at {self.step}" if self.step else ""
            raise BuildFailed(f"build of {self.image} failed{where}: {self.error}", output=tuple(self.tail))
        if not self.image_id:
            raise BuildFailed(f"build of {self.image} ended without an image id", output=tuple(self.tail))
        return events, self.image_id


class BuildStreamParser(BuildParser):
    """Reads a classic-builder stream: steps, output lines, the image id, or the error."""

    def __init__(self, image: str, *, keep_lines: int = 40) -> None:
        super().__init__(image, keep_lines=keep_lines)
        self._partial = ""

    def handle(self, record: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if self._failed(record):
            return self._flush()
        aux = record.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        text = record.get("stream")
        if isinstance(text, str):
            # The builder's own records start a line even when RUN output did not end with one
            # (`RUN printf x` is followed directly by "Removing intermediate container ...").
            if self._partial and (text.startswith(_BOOKKEEPING) or _STEP.match(text)):
                events.extend(self._flush())
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                events.extend(self._line(line))
        elif isinstance(record.get("status"), str):  # pulling a base image
            status = record["status"]
            layer = record.get("id")
            events.append(BuildOutput(image=self.image, line=f"{layer}: {status}" if layer else status, internal=True))
        return events

    def _line(self, raw: str) -> list[Event]:
        line = last_state(raw)
        match = _STEP.match(line)
        if match:
            self.step = line
            return [BuildStep(image=self.image, step=int(match.group(1)), total=int(match.group(2)), instruction=match.group(3))]
        return [self._output(line, internal=line.startswith(_BOOKKEEPING))]

    def _flush(self) -> list[Event]:
        if self._partial:
            line, self._partial = self._partial, ""
            return self._line(line)
        return []


class PushStreamParser:
    """Reads a push stream: per-layer progress, the digest, or the error."""

    def __init__(self, image: str, reference: str) -> None:
        self.image = image
        self.reference = reference
        self.digest: str | None = None
        self.size: int | None = None
        self.error: str | None = None

    def handle(self, record: dict[str, Any]) -> list[Event]:
        if "error" in record or "errorDetail" in record:
            detail = record.get("errorDetail")
            detail = detail if isinstance(detail, dict) else {}
            self.error = str(detail.get("message") or record.get("error") or "push failed")
            return []
        aux = record.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
            self.digest = aux["Digest"]
            size = aux.get("Size")
            self.size = size if isinstance(size, int) else None
            return []
        status = record.get("status")
        layer = record.get("id")
        if not isinstance(status, str) or not isinstance(layer, str):
            return []
        progress = record.get("progressDetail")
        progress = progress if isinstance(progress, dict) else {}
        current, total = progress.get("current"), progress.get("total")
        return [
            LayerProgress(
                image=self.image, reference=self.reference, layer=layer, status=status,
                current=current if isinstance(current, int) else None,
                total=total if isinstance(total, int) else None,
            )
        ]

    def finish(self) -> tuple[str, int | None]:
        """The pushed digest; raises PushFailed (classified transient or not) otherwise."""
        if self.error is not None:
            transient, retry_after = classify_text(self.error)
            raise PushFailed(f"push of {self.reference} failed: {self.error}", transient=transient, retry_after=retry_after)
        if not self.digest:
            raise PushFailed(f"push of {self.reference} ended without a digest: the registry did not confirm it", transient=True)
        return self.digest, self.size
