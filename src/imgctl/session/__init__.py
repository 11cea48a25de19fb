"""A BuildKit session served by imgctl: what BuildKit asks the client for during a build.

    with Session(connect, credentials=lookup, secrets={"tok": b"..."}) as session:
        POST /build?version=2&session=<session.id>  (read its stream to the end)

Without one, BuildKit (`POST /build?version=2`) cannot pull a base image behind auth (`no active
sessions`) nor mount secrets or an SSH agent. The session is a second connection to the engine,
upgraded to HTTP/2, on which the daemon calls gRPC methods that imgctl answers (services.py).
docker-py has none (docker/docker-py#2230); grpcio cannot serve on a connected socket
(grpc/grpc#23760): this package speaks gRPC itself, over the h2 library.
"""

from __future__ import annotations

import logging
import secrets as _secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType

from imgctl.errors import ImgctlError
from imgctl.session.handshake import HandshakeError, read_upgrade, upgrade_request
from imgctl.session.server import Connection
from imgctl.session.services import CredentialsLookup, check_secrets, handlers

__all__ = ["Session", "SessionError"]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 15.0
JOIN_TIMEOUT = 5.0


class SessionError(ImgctlError):
    """The engine refused or dropped the BuildKit session."""


class Session:
    """One BuildKit session, for one build: a context manager that serves it in a daemon thread.

    `connect()` opens a new raw socket to the engine (unix or tcp, TLS already wrapped).
    `credentials(host)` answers (username, secret), or None for anonymous; `host` is as BuildKit
    names the registry (Docker Hub is `registry-1.docker.io`). `secrets` maps an id to its value,
    `ssh` an agent id ("default" for the unnamed one) to the path of an agent socket.
    Exceptions the credentials lookup raised are kept in `failures` (with what failed), for the
    caller to report when the build fails; BuildKit is only told their type.
    """

    def __init__(
        self, connect: Callable[[], socket.socket], *, credentials: CredentialsLookup,
        secrets: Mapping[str, bytes] = MappingProxyType({}), ssh: Mapping[str, str] = MappingProxyType({}),
        name: str = "imgctl",
    ) -> None:
        self.id = _secrets.token_hex(16)
        self.name = name
        self._connect = connect
        self.failures: list[tuple[str, BaseException]] = []
        self._handlers = handlers(
            credentials=credentials, secrets=check_secrets(secrets), ssh=dict(ssh), failed=self._failed,
        )
        self._sock: socket.socket | None = None
        self._connection: Connection | None = None
        self._thread: threading.Thread | None = None

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures.append((what, exc))

    @property
    def calls(self) -> Counter[str]:
        """How many calls of each gRPC method the daemon made (e.g. /grpc.health.v1.Health/Check)."""
        connection = self._connection
        if connection is None:
            return Counter()
        with connection.cond:
            return Counter(connection.served)

    @property
    def alive(self) -> bool:
        """Is the session thread still serving?"""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Session:
        try:
            self._sock = self._connect()
        except OSError as exc:
            raise SessionError(f"cannot open a BuildKit session: {exc}") from None
        try:
            self._sock.settimeout(HANDSHAKE_TIMEOUT)
            self._sock.sendall(upgrade_request(self.id, name=self.name, shared_key=self.name, methods=self._handlers))
            initial = read_upgrade(self._sock)
            self._connection = Connection(self._sock, self._handlers, initial=initial)
            self._thread = threading.Thread(target=self._connection.serve, name=f"buildkit-session-{self.id[:8]}", daemon=True)
            self._thread.start()
            if not self._connection.ready.wait(HANDSHAKE_TIMEOUT):
                raise SessionError("the engine switched to a BuildKit session but never spoke HTTP/2 on it")
            if not self.alive:
                raise SessionError("the engine closed the BuildKit session as it opened")
        except BaseException as exc:
            self._close()
            if isinstance(exc, HandshakeError):
                raise SessionError(f"the engine refused a BuildKit session: {exc}") from None
            if isinstance(exc, OSError):
                raise SessionError(f"the BuildKit session's connection failed: {exc}") from None
            raise
        log.debug("session %s open", self.id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        """Close the connection and wait (a bounded time) for the session's threads, on every path."""
        connection, thread, sock = self._connection, self._thread, self._sock
        if connection is not None:
            connection.close()
        elif sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + JOIN_TIMEOUT
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        if connection is not None:
            for call_thread in list(connection.threads):
                # A call stuck in the caller's credentials lookup is a daemon thread: not waited for past the deadline.
                call_thread.join(max(0.0, deadline - time.monotonic()))
        if sock is not None:
            sock.close()
        if thread is not None and thread.is_alive():  # pragma: no cover (a read cannot outlive shutdown)
            log.debug("session %s: its thread did not end within %.0f s", self.id, JOIN_TIMEOUT)
        log.debug("session %s closed", self.id)
