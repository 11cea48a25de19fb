"""gRPC over HTTP/2, the server's half, as much as a BuildKit session needs: message framing,
status codes, response headers and trailers.

https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable

Headers = list[tuple[str, str]]

CONTENT_TYPE = "application/grpc"
# A message is 1 byte (compressed?) and a 4-byte big-endian length before the protobuf.
PREFIX = struct.Struct(">BI")
# grpc-go's default receive limit (BuildKit v0.8's too); a larger request is refused, not buffered.
MAX_MESSAGE = 4 * 1024 * 1024


class Status(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class GrpcError(Exception):
    """Raised by a handler: the call ends with this status and message."""

    def __init__(self, code: Status, message: str = "") -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message


def frame(message: bytes) -> bytes:
    """One length-prefixed, uncompressed message."""
    if len(message) > 0xFFFFFFFF:
        raise ValueError("a gRPC message is at most 4 GiB")
    return PREFIX.pack(0, len(message)) + message


class MessageReader:
    """Length-prefixed messages out of a stream's DATA, however the frames cut them."""

    def __init__(self, *, limit: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        """The messages `data` completes; raises GrpcError for one compressed or over the limit."""
        self._buffer += data
        messages = []
        while len(self._buffer) >= PREFIX.size:
            compressed, size = PREFIX.unpack_from(self._buffer)
            if compressed:
                # No grpc-accept-encoding is ever sent: a peer that compresses anyway is broken.
                raise GrpcError(Status.UNIMPLEMENTED, "compressed messages are not accepted")
            if size > self._limit:
                raise GrpcError(Status.RESOURCE_EXHAUSTED, f"message of {size} bytes exceeds {self._limit}")
            end = PREFIX.size + size
            if len(self._buffer) < end:
                break
            messages.append(bytes(self._buffer[PREFIX.size:end]))
            del self._buffer[:end]
        return messages

    @property
    def partial(self) -> bool:
        """Are bytes of an unfinished message waiting? (At END_STREAM that is a broken request.)"""
        return bool(self._buffer)


def percent_encode(text: str) -> str:
    """grpc-message: UTF-8, every byte outside printable ASCII (and '%' itself) as %XX."""
    return "".join(
        chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in text.encode("utf-8")
    )


def percent_decode(text: str) -> str:
    """The inverse of percent_encode; a malformed escape is kept as it is, as gRPC says."""
    out = bytearray()
    raw = text.encode("utf-8", "replace")
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and _is_hex(raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def response_headers() -> Headers:
    return [(":status", "200"), ("content-type", CONTENT_TYPE)]


def trailers(code: Status, message: str = "") -> Headers:
    out = [("grpc-status", str(int(code)))]
    if message:
        out.append(("grpc-message", percent_encode(message)))
    return out


def trailers_only(code: Status, message: str = "") -> Headers:
    """The whole answer of a call that fails before any message: one HEADERS with END_STREAM."""
    return response_headers() + trailers(code, message)


def request_problem(headers: Iterable[tuple[str, str]]) -> str | None:
    """Why these request headers are not a gRPC call, or None when they are one."""
    found = dict(headers)
    if found.get(":method") != "POST":
        return f"method {found.get(':method')!r} is not POST"
    content_type = found.get("content-type", "")
    if not (content_type == CONTENT_TYPE or content_type.startswith((CONTENT_TYPE + "+", CONTENT_TYPE + ";"))):
        return f"content-type {content_type!r} is not {CONTENT_TYPE}"
    if not found.get(":path", "").startswith("/"):
        return "no :path"
    return None


def metadata(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A call's custom metadata: its headers less the pseudo-headers and the reserved grpc-* ones."""
    reserved = {"content-type", "te", "user-agent"}
    return {
        name: value for name, value in headers
        if not name.startswith((":", "grpc-")) and name not in reserved
    }
