"""A small fault-injecting HTTP/1.1 reverse proxy for registry tests (stdlib only).

One thread per client connection, one upstream connection per client connection. Request and
response bodies are relayed raw in their original framing (Content-Length, chunked, or
close-delimited), so nothing is buffered whole. Only ever talks to an upstream on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

_BUF = 65536
_IDLE_TIMEOUT = 60.0  # lets forgotten connection threads end by themselves

_ERROR_CODES = {
    400: "UNSUPPORTED",
    401: "UNAUTHORIZED",
    403: "DENIED",
    404: "NAME_UNKNOWN",
    429: "TOOMANYREQUESTS",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
}


@dataclass(eq=False)  # identity equality/hash: a rule is a counter keyed by object
class Rule:
    method: str | None
    path: str
    action: Literal["status", "reset", "stall"]
    count: int = 1
    status: int = 503
    retry_after: int | None = None
    stall_seconds: float = 0
    after_bytes: int = 0
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers of a "status" rule

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    status: int | None  # status sent to the client; None if the connection was dropped
    action: str | None  # "status" / "reset" / "stall" when a rule fired, else None
    rule: Rule | None = field(default=None, compare=False)


class _Closed(Exception):
    """Peer closed the connection in the middle of a message."""


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(_BUF)
        if not data:
            return False
        self.buf += data
        return True

    def readline(self, limit: int = 65536) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > limit:
                raise _Closed("header line too long")
            if not self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line

    def read_some(self, n: int) -> bytes:
        if not self.buf and not self._fill():
            return b""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_head(self) -> list[bytes] | None:
        """Lines of a message head without the blank line; None on a clean EOF before it."""
        lines: list[bytes] = []
        while True:
            line = self.readline()
            if not line:
                if lines:
                    raise _Closed("EOF in message head")
                return None
            if line in (b"\r\n", b"\n"):
                if not lines:
                    continue  # tolerate stray CRLF between messages
                return lines
            lines.append(line)


def _headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        key = name.strip().lower()
        out[key] = f"{out[key]}, {value.strip()}" if key in out else value.strip()
    return out


def _fixed(r: _Reader, n: int) -> Iterator[bytes]:
    while n > 0:
        data = r.read_some(min(n, _BUF))
        if not data:
            raise _Closed("EOF in body")
        n -= len(data)
        yield data


def _chunked(r: _Reader) -> Iterator[bytes]:
    """Raw chunked body including framing and trailers."""
    while True:
        line = r.readline()
        if not line:
            raise _Closed("EOF in chunk header")
        yield line
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:
                trailer = r.readline()
                if not trailer:
                    raise _Closed("EOF in trailers")
                yield trailer
                if trailer in (b"\r\n", b"\n"):
                    return
        yield from _fixed(r, size + 2)


def _until_eof(r: _Reader) -> Iterator[bytes]:
    while data := r.read_some(_BUF):
        yield data


def _is_chunked(h: dict[str, str]) -> bool:
    te = h.get("transfer-encoding", "")
    return te.split(",")[-1].strip().lower() == "chunked" if te else False


def _wants_close(version: str, h: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in h.get("connection", "").split(",")}
    return "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)


def _error_response(
    status: int, retry_after: int | None = None, close: bool = False, headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    body = json.dumps(
        {
            "errors": [
                {
                    "code": _ERROR_CODES.get(status, "UNKNOWN"),
                    "message": "You have reached your pull rate limit" if status == 429 else f"injected by faultproxy: {status} {reason}",
                    "detail": None,
                }
            ]
        }
    ).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json; charset=utf-8",
        "Docker-Distribution-Api-Version: registry/2.0",
        f"Content-Length: {len(body)}",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    head += [f"{name}: {value}" for name, value in headers]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _abort(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST, so the client sees a connection reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    def __init__(self, upstream: str, rules: list[Rule] | tuple[Rule, ...] = ()) -> None:
        host, _, port = upstream.rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            raise ValueError(f"upstream must be 127.0.0.1:PORT, got {upstream!r}")
        self.upstream = (host, int(port))
        self._rules: list[Rule] = list(rules)
        self._fired: dict[Rule, int] = {}
        self._hits: list[Hit] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self.host = ""

    # -- public API -------------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def fired(self, rule: Rule) -> int:
        with self._lock:
            return self._fired.get(rule, 0)

    @property
    def hits(self) -> list[Hit]:
        """A snapshot of the requests seen so far, in arrival order."""
        with self._lock:
            return list(self._hits)

    def start(self) -> FaultProxy:
        if self._listener is not None:
            return self
        self._stop.clear()
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        ls.settimeout(0.2)  # accept() is not woken by close() from another thread
        self._listener = ls
        self.port = int(ls.getsockname()[1])
        self.host = f"127.0.0.1:{self.port}"
        self._spawn(self._accept_loop, ls)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes threads blocked in recv/send
            except OSError:
                pass
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout / max(len(threads), 1))
        for s in socks:
            s.close()
        self._listener = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=self._run, args=(target, *args), daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _run(self, target: Callable[..., None], *args: object) -> None:
        try:
            target(*args)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.add(s)

    def _untrack(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.discard(s)
        s.close()

    def _accept_loop(self, ls: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = ls.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(_IDLE_TIMEOUT)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._track(conn)
                self._spawn(self._serve, conn)
        finally:
            ls.close()

    def _take_rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if self._fired.get(rule, 0) < rule.count and rule.matches(method, path):
                    self._fired[rule] = self._fired.get(rule, 0) + 1
                    return rule
        return None

    def _record(self, method: str, path: str, status: int | None, rule: Rule | None) -> None:
        with self._lock:
            self._hits.append(Hit(method, path, status, rule.action if rule else None, rule))

    def _connect_upstream(self) -> tuple[socket.socket, _Reader]:
        up = socket.create_connection(self.upstream, timeout=5)
        up.settimeout(_IDLE_TIMEOUT)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(up)
        return up, _Reader(up)

    def _serve(self, client: socket.socket) -> None:
        reader = _Reader(client)
        upstream: tuple[socket.socket, _Reader] | None = None
        reset = False
        try:
            # The daemon tries TLS first even for 127.0.0.1 registries. A ClientHello has no
            # line end, so waiting for a request line would stall it until its 10 s handshake
            # timeout; a plain-HTTP answer makes it fall back to HTTP at once.
            if not reader._fill():
                return
            if reader.buf[0] == 0x16:
                client.sendall(_error_response(400, close=True))
                return
            while not self._stop.is_set():
                head = reader.read_head()
                if head is None:
                    return
                request_line = head[0].decode("latin-1").strip()
                parts = request_line.split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    client.sendall(_error_response(400, close=True))
                    return
                method, target, version = parts
                path = urlsplit(target).path or target
                h = _headers(head[1:])
                if _is_chunked(h):
                    body = _chunked(reader)
                elif "content-length" in h:
                    body = _fixed(reader, int(h["content-length"]))
                else:
                    body = iter(())
                close = _wants_close(version, h)

                rule = self._take_rule(method, path)
                if rule is not None and rule.action == "reset":
                    # after_bytes counts raw body bytes (chunk framing included).
                    got = 0
                    while got < rule.after_bytes and (data := next(body, b"")):
                        got += len(data)
                    self._record(method, path, None, rule)
                    reset = True
                    return
                if rule is not None and rule.action == "status":
                    if h.get("expect", "").lower() == "100-continue":
                        close = True  # the client waits for us before sending the body
                    else:
                        for _ in body:
                            pass
                    # Record before answering, so a client that saw the answer sees the hit.
                    self._record(method, path, rule.status, rule)
                    client.sendall(_error_response(rule.status, rule.retry_after, close, rule.headers))
                    if close:
                        return
                    continue
                if rule is not None and rule.action == "stall":
                    if self._stop.wait(rule.stall_seconds):
                        self._record(method, path, None, rule)
                        return

                if upstream is None:
                    try:
                        upstream = self._connect_upstream()
                    except OSError:
                        for _ in body:
                            pass
                        self._record(method, path, 502, rule)
                        client.sendall(_error_response(502, close=True))
                        return
                up, up_reader = upstream
                up.sendall(b"".join(head) + b"\r\n")
                for data in body:
                    up.sendall(data)

                record = lambda status: self._record(method, path, status, rule)  # noqa: E731
                if self._relay_response(method, up_reader, client, record) or close:
                    return
        except (OSError, _Closed, ValueError):
            return
        finally:
            if upstream is not None:
                self._untrack(upstream[0])
            with self._lock:
                self._socks.discard(client)
            if reset:
                _abort(client)
            else:
                client.close()

    def _relay_response(
        self,
        method: str,
        up_reader: _Reader,
        client: socket.socket,
        record: Callable[[int], None],
    ) -> bool:
        """Copy one response (after any 1xx) to the client; return whether to close."""
        while True:
            head = up_reader.read_head()
            if head is None:
                raise _Closed("upstream closed before responding")
            version, status_s = head[0].decode("latin-1").split(" ", 2)[:2]
            status = int(status_s)
            if status >= 200 or status == 101:
                record(status)
                client.sendall(b"".join(head) + b"\r\n")
                break
            client.sendall(b"".join(head) + b"\r\n")
        h = _headers(head[1:])
        close = _wants_close(version, h)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body: Iterator[bytes] = iter(())
        elif _is_chunked(h):
            body = _chunked(up_reader)
        elif "content-length" in h:
            body = _fixed(up_reader, int(h["content-length"]))
        else:
            body, close = _until_eof(up_reader), True
        for data in body:
            client.sendall(data)
        return close
