"""The gRPC server of one session: HTTP/2 (h2, sans-IO) on one already-connected socket.

After the 101 the daemon is the HTTP/2 client. One thread (serve) reads the socket and feeds h2;
each call runs its handler in a thread of its own, so a slow credential helper never delays a
Health check. h2 is not thread-safe: every use of it, and every write to the socket, happens
under one lock, whose condition also wakes senders waiting for flow-control window.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Mapping

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from imgctl.session import grpc
from imgctl.session.call import Call, Cancelled
from imgctl.session.grpc import GrpcError, Status
from imgctl.session.services import Handler

log = logging.getLogger(__name__)

IO_TIMEOUT = 30.0  # a write stuck this long means a dead peer; an idle read just loops


class Connection:
    def __init__(self, sock: socket.socket, handlers: Mapping[str, Handler], *, initial: bytes = b"") -> None:
        self.sock = sock
        self.handlers = dict(handlers)
        self.initial = initial
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.cond = threading.Condition(threading.RLock())
        self.calls: dict[int, Call] = {}
        self.threads: list[threading.Thread] = []
        self.served: Counter[str] = Counter()  # calls started, by method: what the build asked for
        self.closed = False
        self.ready = threading.Event()  # the daemon's SETTINGS arrived: the session is registered

    # -- the session thread ------------------------------------------------------------------

    def serve(self) -> None:
        """Read and answer until the daemon or close() ends the connection."""
        self.sock.settimeout(IO_TIMEOUT)
        try:
            with self.cond:
                self.h2.initiate_connection()  # our SETTINGS first, or grpc-go drops the transport
                self._flush()
            if self.initial:
                self._receive(self.initial)
            while not self.closed:
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self._receive(data)
        finally:
            self._end()

    def _receive(self, data: bytes) -> None:
        with self.cond:
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                log.debug("session: HTTP/2 protocol error from the daemon: %s", exc)
                self._flush()  # h2 queued a GOAWAY
                self.closed = True
                return
            for event in events:
                self._handle(event)
            self._flush()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._start(event.stream_id, [(_text(k), _text(v)) for k, v in event.headers or []])
        elif isinstance(event, h2.events.DataReceived):
            call = self.calls.get(event.stream_id)
            size = event.flow_controlled_length or 0
            if call is None or call.finished or call.cancelled:
                self.acknowledge(None, size, event.stream_id)
                return
            padding = size - len(event.data or b"")
            self.acknowledge(None, padding, event.stream_id)
            call.unacked += len(event.data or b"")
            try:
                call.inbox.extend(call.reader.feed(event.data or b""))
            except GrpcError as exc:
                self._fail(call, exc)
            self.cond.notify_all()
        elif isinstance(event, h2.events.StreamEnded):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.remote_done = True
                if call.reader.partial:
                    self._fail(call, GrpcError(Status.INTERNAL, "the request ended inside a message"))
                self.cond.notify_all()
        elif isinstance(event, h2.events.StreamReset):
            call = self.calls.pop(event.stream_id, None)
            if call is not None:
                self._cancel_later(call)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.ready.set()
            self.cond.notify_all()
        elif isinstance(event, h2.events.WindowUpdated):
            self.cond.notify_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            log.debug("session: the daemon closed the connection (error code %s)", event.error_code)
            self.closed = True

    def _start(self, stream_id: int, headers: list[tuple[str, str]]) -> None:
        path = dict(headers).get(":path", "")
        problem = grpc.request_problem(headers)
        handler = self.handlers.get(path)
        self.served[path] += 1
        if problem or handler is None:
            code = Status.UNIMPLEMENTED
            self.h2.send_headers(stream_id, grpc.trailers_only(code, problem or f"unknown method {path}"), end_stream=True)
            return
        call = Call(self, stream_id, path, grpc.metadata(headers))
        self.calls[stream_id] = call
        thread = threading.Thread(target=self._run, args=(call, handler), name=f"session-call-{stream_id}", daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    # -- the calls' threads ------------------------------------------------------------------

    def _run(self, call: Call, handler: Handler) -> None:
        try:
            handler(call)
        except Cancelled:
            return
        except GrpcError as exc:
            self._finish(call, exc.code, exc.message)
        except Exception as exc:  # a bug: say which method, not the exception's text (it may hold a value)
            log.debug("session: %s failed with %s", call.path, type(exc).__name__)
            self._finish(call, Status.INTERNAL, f"imgctl's {call.path} failed ({type(exc).__name__})")
        else:
            self._finish(call, Status.OK)

    def send_message(self, call: Call, data: bytes) -> None:
        view = memoryview(data)
        with self.cond:
            while True:
                if call.cancelled or call.finished or self.closed:
                    raise Cancelled(call.path)
                try:
                    if not call.headers_sent:
                        self.h2.send_headers(call.stream_id, grpc.response_headers())
                        call.headers_sent = True
                    if not view:
                        break
                    window = min(self.h2.local_flow_control_window(call.stream_id), self.h2.max_outbound_frame_size)
                    if window <= 0:
                        self.cond.wait()
                        continue
                    self.h2.send_data(call.stream_id, bytes(view[:window]))
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    raise Cancelled(call.path) from None
                view = view[window:]
                self._flush()
            self._flush()

    def _finish(self, call: Call, code: Status, message: str = "") -> None:
        with self.cond:
            if call.finished or call.cancelled or self.closed:
                return
            call.finished = True
            headers = grpc.trailers(code, message) if call.headers_sent else grpc.trailers_only(code, message)
            try:
                self.h2.send_headers(call.stream_id, headers, end_stream=True)
                if not call.remote_done:  # as grpc-go does: tell the client to stop sending
                    self.h2.reset_stream(call.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self.calls.pop(call.stream_id, None)
            self.acknowledge(call, call.unacked)  # what the handler never read still counts for the connection
            self._flush()

    def _fail(self, call: Call, error: GrpcError) -> None:
        """A broken request: answer it now; its handler's next recv or send sees it cancelled."""
        self._finish(call, error.code, error.message)
        self._cancel_later(call)

    # -- shared ------------------------------------------------------------------------------

    def acknowledge(self, call: Call | None, size: int, stream_id: int | None = None) -> None:
        """Give `size` received bytes back to the peer's windows (under the lock)."""
        if call is not None:
            size = min(size, call.unacked)
            call.unacked -= size
            stream_id = call.stream_id
        if size > 0 and stream_id is not None and not self.closed:
            self.h2.acknowledge_received_data(size, stream_id)
            self._flush()

    def _flush(self) -> None:
        out = self.h2.data_to_send()
        if out and not self.closed:
            try:
                self.sock.sendall(out)
            except OSError as exc:  # a timeout included: the peer is gone or stuck
                log.debug("session: write failed: %s", exc)
                self.closed = True
                self.cond.notify_all()

    def _cancel_later(self, call: Call) -> None:
        callbacks = call.cancel()
        self.cond.notify_all()
        for callback in callbacks:  # they only shut a socket down: safe under the lock
            callback()

    def _end(self) -> None:
        with self.cond:
            self.closed = True
            calls, self.calls = list(self.calls.values()), {}
            for call in calls:
                self._cancel_later(call)
            self.cond.notify_all()

    def close(self) -> None:
        """From any thread: say GOAWAY, then wake the session thread's read."""
        with self.cond:
            if not self.closed:
                try:
                    self.h2.close_connection()
                except h2.exceptions.ProtocolError:
                    pass
                self._flush()
            self.closed = True
            self.cond.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
