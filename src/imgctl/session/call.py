"""One gRPC call as its handler sees it: the request messages in, the response messages out.

The call's state lives under its Connection's lock; recv() gives the flow-control window back only
as the handler takes each message, so a handler that stops reading stops the sender.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from imgctl.session import grpc

if TYPE_CHECKING:
    from imgctl.session.server import Connection


class Cancelled(Exception):
    """The call was reset by the peer, or the session ended."""


class Call:
    """One gRPC call on one HTTP/2 stream (services.Call)."""

    def __init__(self, server: Connection, stream_id: int, path: str, metadata: Mapping[str, str]) -> None:
        self.server, self.stream_id, self.path, self.metadata = server, stream_id, path, metadata
        self.reader = grpc.MessageReader()
        self.inbox: deque[bytes] = deque()
        self.unacked = 0  # DATA bytes received, not yet handed to the handler nor acknowledged
        self.remote_done = False  # the client sent END_STREAM
        self.cancelled = False
        self.finished = False
        self.headers_sent = False
        self._on_cancel: list[Callable[[], None]] = []

    def recv(self) -> bytes | None:
        with self.server.cond:
            while not self.inbox and not self.remote_done and not self.cancelled:
                self.server.cond.wait()
            if self.cancelled:
                raise Cancelled(self.path)
            if not self.inbox:
                return None
            message = self.inbox.popleft()
            # Only now is the window opened again: a handler that does not read stops the sender.
            self.server.acknowledge(self, grpc.PREFIX.size + len(message))
            return message

    def send(self, message: bytes) -> None:
        self.server.send_message(self, grpc.frame(message))

    def on_cancel(self, callback: Callable[[], None]) -> None:
        with self.server.cond:
            if not self.cancelled:
                self._on_cancel.append(callback)
                return
        callback()

    def cancel(self) -> list[Callable[[], None]]:
        """Mark cancelled (under the lock); the callbacks to run once it is released."""
        self.cancelled = True
        callbacks, self._on_cancel = self._on_cancel, []
        return callbacks
