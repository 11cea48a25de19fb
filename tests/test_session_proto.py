"""The BuildKit session's pure parts: protobuf, gRPC framing, the upgrade, the services, and the
HTTP/2 server driven by a real h2 client over a socketpair (no engine, no network)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgctl.session import proto, sshagent
from imgctl.session.grpc import GrpcError, MessageReader, Status, frame, metadata, percent_decode, percent_encode, \
    request_problem, trailers_only
from imgctl.session.handshake import HandshakeError, read_upgrade, upgrade_request
from imgctl.session.call import Cancelled
from imgctl.session.server import Connection
from imgctl.session.services import check_secrets, credentials_handler, handlers, secrets_handler

# -- protobuf -------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = proto.encode_varint(value)
    assert proto.decode_varint(encoded + b"\xff") == (value, len(encoded))


def test_the_messages_bytes_are_those_of_protoc() -> None:
    assert proto.health_check_response() == b"\x08\x01"
    assert proto.credentials_response("u", "pw") == b"\x0a\x01u\x12\x02pw"
    assert proto.credentials_response("", "") == b""  # proto3 leaves defaults out
    assert proto.secret_response(b"\x00\x01") == b"\x0a\x02\x00\x01"
    assert proto.bytes_message(b"x" * 200) == b"\x0a\xc8\x01" + b"x" * 200
    assert proto.encode_varint(-1) == b"\xff" * 9 + b"\x01"


def test_requests_decode_and_unknown_fields_are_skipped() -> None:
    annotations = proto.bytes_field(2, proto.string_field(1, "k") + proto.string_field(2, "v"))  # a map entry
    assert proto.secret_request_id(proto.string_field(1, "tok") + annotations) == "tok"
    assert proto.credentials_request_host(b"\x0a\x0e127.0.0.1:5000") == "127.0.0.1:5000"
    assert proto.get_string(proto.string_field(1, "a") + proto.string_field(1, "b"), 1) == "b"  # the last wins
    assert proto.get_string(proto.varint_field(2, 7) + b"\x1d\x00\x00\x00\x00", 1) == ""  # varint, fixed32
    assert proto.check_agent_request_id(b"") == ""


@pytest.mark.parametrize("data", [b"\x0a", b"\x0a\x05ab", b"\x80", b"\x0b", b"\x00\x01", b"\xff" * 11, b"\x08\xff"])
def test_broken_messages_raise_decode_error(data: bytes) -> None:
    with pytest.raises(proto.DecodeError):
        list(proto.fields(data))


def test_a_varint_where_bytes_belong_is_a_decode_error() -> None:
    with pytest.raises(proto.DecodeError):
        proto.get_bytes(b"\x08\x01", 1)
    with pytest.raises(proto.DecodeError):
        proto.get_string(b"\x0a\x01\xff", 1)


# -- gRPC framing -----------------------------------------------------------------------------------


def test_messages_come_out_whole_however_the_frames_cut_them() -> None:
    messages = [b"", b"a", b"x" * 70000, proto.health_check_response()]
    stream = b"".join(frame(m) for m in messages)
    for cut in [1, 2, 4, 5, 6, 1000, 65536]:
        reader = MessageReader()
        out = []
        for i in range(0, len(stream), cut):
            out += reader.feed(stream[i:i + cut])
        assert out == messages and not reader.partial
    reader = MessageReader()
    assert reader.feed(frame(b"abc")[:-1]) == [] and reader.partial


def test_compressed_and_oversized_messages_are_refused() -> None:
    with pytest.raises(GrpcError) as compressed:
        MessageReader().feed(b"\x01" + struct.pack(">I", 1) + b"x")
    assert compressed.value.code == Status.UNIMPLEMENTED
    with pytest.raises(GrpcError) as big:
        MessageReader(limit=10).feed(struct.pack(">BI", 0, 11))  # refused before its body arrives
    assert big.value.code == Status.RESOURCE_EXHAUSTED


@given(st.text())
def test_grpc_message_percent_encoding_round_trips(text: str) -> None:
    encoded = percent_encode(text)
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded)
    assert percent_decode(encoded) == text.encode("utf-8", "replace").decode("utf-8", "replace")


def test_grpc_message_percent_encoding_as_the_spec_shows() -> None:
    assert percent_encode("secret nope not found") == "secret nope not found"
    assert percent_encode("100%\nü") == "100%25%0A%C3%BC"
    assert percent_decode("50%2 %zz%") == "50%2 %zz%"  # malformed escapes stay as they are


def test_an_error_answer_is_one_headers_block() -> None:
    assert trailers_only(Status.NOT_FOUND, "secret x not found") == [
        (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "5"), ("grpc-message", "secret x not found"),
    ]
    assert trailers_only(Status.OK) == [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0")]


def test_requests_that_are_not_grpc_calls_are_named() -> None:
    call = [(":method", "POST"), (":path", "/a/B"), ("content-type", "application/grpc"), ("te", "trailers"),
            ("grpc-timeout", "9999812u"), ("buildkit.ssh.id", "default"), ("user-agent", "grpc-go/1.33.3")]
    assert request_problem(call) is None
    assert request_problem([*call[:2], ("content-type", "application/grpc+proto")]) is None
    assert "GET" in str(request_problem([(":method", "GET"), *call[1:]]))
    assert "content-type" in str(request_problem(call[:2]))
    assert metadata(call) == {"buildkit.ssh.id": "default"}


# -- the upgrade ------------------------------------------------------------------------------------


def test_the_upgrade_request_names_one_method_per_line() -> None:
    request = upgrade_request("id1", name="imgctl", shared_key="k", methods=["/a/B", "/c/D"]).decode()
    lines = request.split("\r\n")
    assert lines[0] == "POST /session HTTP/1.1" and request.endswith("\r\n\r\n")
    assert {"Upgrade: h2c", "Connection: Upgrade", "X-Docker-Expose-Session-Uuid: id1", "X-Docker-Expose-Session-Name: imgctl",
            "X-Docker-Expose-Session-Sharedkey: k"} <= set(lines)
    assert [line for line in lines if "Grpc-Method" in line] == [
        "X-Docker-Expose-Session-Grpc-Method: /a/B", "X-Docker-Expose-Session-Grpc-Method: /c/D"]
    with pytest.raises(ValueError):
        upgrade_request("id\r\nX: y", name="n", shared_key="k", methods=[])


def _answered(*chunks: bytes) -> socket.socket:
    ours, theirs = socket.socketpair()
    for chunk in chunks:
        theirs.sendall(chunk)
    theirs.close()
    return ours


def test_bytes_after_the_101_are_kept_for_http2() -> None:
    sock = _answered(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n", b"Upgrade: h2c\r\n\r\nPRI * HTTP/2.0")
    assert read_upgrade(sock) == b"PRI * HTTP/2.0"


@pytest.mark.parametrize(("answer", "words"), [
    (b'HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\n\r\n{"message":"no session"}', "400: no session"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "101"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.1"),
    (b"HTTP/1.1 200 OK\r\n", "closed the connection"),
])
def test_a_refused_upgrade_says_what_the_engine_answered(answer: bytes, words: str) -> None:
    with pytest.raises(HandshakeError, match=words):
        read_upgrade(_answered(answer))


# -- the services -------------------------------------------------------------------------------------


def test_credentials_come_from_the_callback_and_its_failures_are_not_quoted() -> None:
    failures: list[tuple[str, BaseException]] = []
    request = proto.string_field(1, "reg.example:5000")
    lookup = credentials_handler(lambda host: ("u", "pw") if host == "reg.example:5000" else None,
                                 lambda what, exc: failures.append((what, exc)))
    assert lookup(request, {}) == proto.credentials_response("u", "pw")
    assert lookup(proto.string_field(1, "other"), {}) == b""  # anonymous

    def broken(host: str) -> tuple[str, str]:
        raise RuntimeError("helper printed hunter2")

    with pytest.raises(GrpcError) as failed:
        credentials_handler(broken, lambda what, exc: failures.append((what, exc)))(request, {})
    assert failed.value.code == Status.UNAVAILABLE
    assert "hunter2" not in failed.value.message and "RuntimeError" in failed.value.message
    assert failures[0][0] == "credentials for reg.example:5000" and "hunter2" in str(failures[0][1])


def test_secrets_are_served_by_id_and_unknown_ones_are_not_found() -> None:
    get = secrets_handler({"tok": b"value"})
    assert proto.get_bytes(get(proto.string_field(1, "tok"), {}), 1) == b"value"
    with pytest.raises(GrpcError) as missing:
        get(proto.string_field(1, "nope"), {})
    assert (missing.value.code, missing.value.message) == (Status.NOT_FOUND, "secret nope not found")


def test_secrets_must_be_bytes_and_fit_one_message() -> None:
    assert check_secrets({"a": bytearray(b"x")}) == {"a": b"x"}  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="'a' must be bytes"):
        check_secrets({"a": "text"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="'big' is"):
        check_secrets({"big": b"x" * (4 * 1024 * 1024)})


# -- the SSH agent relay --------------------------------------------------------------------------------


class FakeCall:
    def __init__(self, messages: list[bytes], meta: Mapping[str, str] | None = None) -> None:
        self.path = "/test"
        self.metadata: Mapping[str, str] = dict(meta or {})
        self.inbox, self.sent = list(messages), []  # type: ignore[var-annotated]
        self.cancel_callbacks: list[Callable[[], None]] = []

    def recv(self) -> bytes | None:
        return self.inbox.pop(0) if self.inbox else None

    def send(self, message: bytes) -> None:
        self.sent.append(message)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self.cancel_callbacks.append(callback)


def _agent_message(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", 1 + len(payload)) + bytes([kind]) + payload


def test_the_relay_forwards_key_use_and_refuses_key_changes() -> None:
    ours, agent = socket.socketpair()
    seen: list[bytes] = []

    def fake_agent() -> None:  # answers each request with IDENTITIES_ANSWER (12), 0 keys
        while True:
            head = agent.recv(4)
            if not head:
                return
            body = agent.recv(struct.unpack(">I", head)[0])
            seen.append(head + body)
            agent.sendall(_agent_message(12, b"\x00\x00\x00\x00"))

    thread = threading.Thread(target=fake_agent, daemon=True)
    thread.start()
    listing = _agent_message(sshagent.REQUEST_IDENTITIES)
    remove_all = _agent_message(19)
    call = FakeCall([proto.bytes_message(listing[:3]), proto.bytes_message(listing[3:] + remove_all + listing)])
    sshagent.relay(call, ours)
    ours.close()
    thread.join(5)
    answers = [proto.bytes_message_data(m) for m in call.sent]
    assert answers == [_agent_message(12, b"\x00\x00\x00\x00"), sshagent.failure_reply(), _agent_message(12, b"\x00\x00\x00\x00")]
    assert seen == [listing, listing]  # the removal never reached the agent


def test_agents_are_found_by_id_and_default() -> None:
    assert sshagent.agent_path({"default": "/a"}, "") == "/a"
    with pytest.raises(GrpcError, match="unset ssh forward key deploy"):
        sshagent.agent_path({"default": "/a"}, "deploy")
    with pytest.raises(GrpcError):
        sshagent.split_requests(bytearray(struct.pack(">I", sshagent.MAX_AGENT_MESSAGE + 1)))


# -- the HTTP/2 server, against a real h2 client ----------------------------------------------------------


class Client:
    """The daemon's side: an h2 client (as grpc-go is) on one end of a socketpair."""

    def __init__(self, served: Mapping[str, Any], *, window: int = 65535) -> None:
        self.sock, theirs = socket.socketpair()
        self.sock.settimeout(10)
        self.server = Connection(theirs, served)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.h2.initiate_connection()
        self.flush()
        self.events: dict[int, list[h2.events.Event]] = {}

    def flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def start(self, path: str, messages: list[bytes], *, end: bool = True, meta: list[tuple[str, str]] | None = None) -> int:
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                                      ("content-type", "application/grpc"), ("te", "trailers"), *(meta or [])])
        for message in messages:
            self.h2.send_data(stream, frame(message))
        if end:
            self.h2.end_stream(stream)
        self.flush()
        return stream

    def until(self, stream: int, done: Callable[[list[h2.events.Event]], bool]) -> list[h2.events.Event]:
        while not done(self.events.get(stream, [])):
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.events.setdefault(getattr(event, "stream_id", 0), []).append(event)
            self.flush()
        return self.events[stream]

    def answer(self, stream: int) -> tuple[dict[str, str], list[bytes]]:
        """(headers and trailers, messages) of a call the server ends."""
        events = self.until(stream, lambda evs: any(isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) for e in evs))
        headers: dict[str, str] = {}
        reader, messages = MessageReader(limit=2**30), []
        for event in events:
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                headers.update((str(name), str(value)) for name, value in event.headers)
            elif isinstance(event, h2.events.DataReceived):
                messages += reader.feed(event.data)
        return headers, messages

    def close(self) -> None:
        self.server.close()
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.sock.close()


@pytest.fixture
def client() -> Iterator[Client]:
    served = handlers(credentials=lambda host: None, secrets={"big": bytes(range(256)) * 1200, "s": b"v"},
                      ssh={}, failed=lambda what, exc: None)
    made = Client(served, window=16384)
    yield made
    made.close()


def test_health_and_a_secret_answer_as_grpc_go_expects(client: Client) -> None:
    headers, messages = client.answer(client.start("/grpc.health.v1.Health/Check", [b""]))
    assert headers == {":status": "200", "content-type": "application/grpc", "grpc-status": "0"}
    assert messages == [b"\x08\x01"]
    headers, messages = client.answer(client.start("/moby.buildkit.secrets.v1.Secrets/GetSecret", [proto.string_field(1, "s")]))
    assert headers["grpc-status"] == "0" and messages == [proto.secret_response(b"v")]


def test_a_response_larger_than_the_window_waits_for_window_updates(client: Client) -> None:
    """A 300 KiB secret through a 16 KiB stream window and a 64 KiB connection window."""
    headers, messages = client.answer(client.start("/moby.buildkit.secrets.v1.Secrets/GetSecret", [proto.string_field(1, "big")]))
    assert headers["grpc-status"] == "0"
    assert proto.get_bytes(messages[0], 1) == bytes(range(256)) * 1200


def test_errors_and_unknown_methods_end_the_call_in_one_headers_block(client: Client) -> None:
    headers, messages = client.answer(client.start("/moby.buildkit.secrets.v1.Secrets/GetSecret", [proto.string_field(1, "nö %")]))
    assert (headers["grpc-status"], headers["grpc-message"], messages) == ("5", "secret n%C3%B6 %25 not found", [])
    headers, _ = client.answer(client.start("/moby.filesync.v1.FileSync/DiffCopy", []))
    assert headers["grpc-status"] == str(int(Status.UNIMPLEMENTED))
    headers, _ = client.answer(client.start("/moby.filesync.v1.Auth/GetTokenAuthority", [b""]))
    assert headers["grpc-status"] == "12"
    headers, _ = client.answer(client.start("/grpc.health.v1.Health/Check", []))  # no request message
    assert headers["grpc-status"] == "13"
    assert client.server.served["/grpc.health.v1.Health/Check"] == 1


def test_a_stream_reset_by_the_client_cancels_its_handler() -> None:
    cancelled = threading.Event()
    ended = threading.Event()

    def waits(call: Any) -> None:
        call.on_cancel(cancelled.set)
        try:
            call.recv()
            call.recv()  # the client never ends its side
        except Cancelled:
            ended.set()
            raise

    client = Client({"/t/Wait": waits})
    stream = client.start("/t/Wait", [b"first"], end=False)
    client.until(0, lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
    client.h2.reset_stream(stream)
    client.flush()
    assert cancelled.wait(5) and ended.wait(5)
    headers, _ = client.answer(client.start("/nothing/Here", []))
    assert headers["grpc-status"] == "12"  # the connection goes on
    client.close()


def test_close_ends_the_session_and_wakes_every_call() -> None:
    started, ended = threading.Event(), threading.Event()

    def waits(call: Any) -> None:
        try:
            call.recv()
            started.set()
            call.recv()
        except Cancelled:
            ended.set()

    client = Client({"/t/Wait": waits})
    client.start("/t/Wait", [b"x"], end=False)
    assert started.wait(5)
    client.close()
    assert ended.wait(5)
