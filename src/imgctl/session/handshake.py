"""Opening a session: `POST /session` on a fresh connection, upgraded to h2c (HTTP/1.1 101).

The request is written by hand on a socket of the session's own: docker-py's raw-socket helper
skips its read buffer, and requests could hand an upgraded connection back to its pool.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable

MAX_HEAD = 64 * 1024
MAX_ERROR_BODY = 16 * 1024


class HandshakeError(Exception):
    """The engine did not switch the connection to a session."""


def upgrade_request(session_id: str, *, name: str, shared_key: str, methods: Iterable[str], host: str = "localhost") -> bytes:
    """The request bytes: one X-Docker-Expose-Session-Grpc-Method line per method (dockerd does not
    split a comma-joined value)."""
    for value in (session_id, name, shared_key, host, *methods):
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header value {value!r} holds a line break")
    lines = [
        "POST /session HTTP/1.1",
        f"Host: {host}",
        "Upgrade: h2c",
        "Connection: Upgrade",
        "Content-Length: 0",
        f"X-Docker-Expose-Session-Uuid: {session_id}",
        f"X-Docker-Expose-Session-Name: {name}",
        f"X-Docker-Expose-Session-Sharedkey: {shared_key}",
        *(f"X-Docker-Expose-Session-Grpc-Method: {method}" for method in methods),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, headers with lower-cased names) of an HTTP/1.1 response head."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HandshakeError(f"the engine answered {status_line[:100]!r}, not HTTP/1.1")
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def read_upgrade(sock: socket.socket) -> bytes:
    """Read the engine's answer; return the bytes that came after its head (already HTTP/2).
    Raise HandshakeError, with the engine's message, unless it is 101 to h2c."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            raise HandshakeError("the engine's answer to POST /session has no end of headers")
        chunk = sock.recv(65536)
        if not chunk:
            raise HandshakeError("the engine closed the connection instead of answering POST /session")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    status, headers = parse_head(bytes(buffer[:end]))
    rest = bytes(buffer[end + 4:])
    if status == 101 and headers.get("upgrade", "").lower() == "h2c":
        return rest
    raise HandshakeError(f"POST /session answered {status}: {_error_text(sock, headers, rest)}")


def _error_text(sock: socket.socket, headers: dict[str, str], body: bytes) -> str:
    try:
        wanted = min(int(headers.get("content-length", "0")), MAX_ERROR_BODY)
    except ValueError:
        wanted = 0
    try:
        while len(body) < wanted:
            chunk = sock.recv(wanted - len(body))
            if not chunk:
                break
            body += chunk
    except OSError:
        pass
    text = body.decode("utf-8", "replace").strip()
    try:
        text = str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        pass
    return text[:300] or "(no message)"
