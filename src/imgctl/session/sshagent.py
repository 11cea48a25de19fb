"""`RUN --mount=type=ssh`: BuildKit's SSH service, forwarding to the user's ssh-agent.

Each connection to the agent socket inside a RUN step is one ForwardAgent call, a stream of
BytesMessage both ways. The bytes are relayed to the agent socket named for the call's id, one
agent request at a time, and only the requests that use keys (list them, sign with them): a
Dockerfile must not add, remove or lock the user's keys. BuildKit's own socket provider (which the
docker CLI uses) serves the agent read-only the same way.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping

from imgctl.session import proto
from imgctl.session.grpc import GrpcError, Status
from imgctl.session.services import Call, Handler, unary

CHECK_AGENT = "/moby.sshforward.v1.SSH/CheckAgent"
FORWARD_AGENT = "/moby.sshforward.v1.SSH/ForwardAgent"
ID_METADATA = "buildkit.ssh.id"
DEFAULT_ID = "default"

# The agent protocol (draft-miller-ssh-agent): uint32 length, then a type byte and its payload.
_LENGTH = struct.Struct(">I")
MAX_AGENT_MESSAGE = 256 * 1024  # OpenSSH's own limit (AGENT_MAX_LEN)
AGENT_FAILURE = 5
REQUEST_IDENTITIES, SIGN_REQUEST, EXTENSION = 11, 13, 27
READ_ONLY = frozenset({REQUEST_IDENTITIES, SIGN_REQUEST, EXTENSION})
CONNECT_TIMEOUT = 1.0  # as BuildKit's provider dials the agent


def agent_path(agents: Mapping[str, str], agent_id: str) -> str:
    try:
        return agents[agent_id or DEFAULT_ID]
    except KeyError:
        raise GrpcError(Status.NOT_FOUND, f"unset ssh forward key {agent_id or DEFAULT_ID}") from None


def split_requests(buffer: bytearray) -> list[bytes]:
    """The whole agent messages at the start of `buffer` (removed from it), each with its length."""
    found = []
    while len(buffer) >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(buffer)
        if size == 0 or size > MAX_AGENT_MESSAGE:
            raise GrpcError(Status.INVALID_ARGUMENT, f"agent message of {size} bytes")
        end = _LENGTH.size + size
        if len(buffer) < end:
            break
        found.append(bytes(buffer[:end]))
        del buffer[:end]
    return found


def failure_reply() -> bytes:
    return _LENGTH.pack(1) + bytes([AGENT_FAILURE])


def _read_reply(agent: socket.socket) -> bytes | None:
    """One whole reply from the agent, or None if it closed the connection."""
    head = _read_exactly(agent, _LENGTH.size)
    if head is None:
        return None
    (size,) = _LENGTH.unpack(head)
    if size == 0 or size > MAX_AGENT_MESSAGE:
        raise GrpcError(Status.INTERNAL, f"the ssh agent answered a message of {size} bytes")
    body = _read_exactly(agent, size)
    return None if body is None else head + body


def _read_exactly(agent: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        try:
            chunk = agent.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _connect(path: str) -> socket.socket:
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.settimeout(CONNECT_TIMEOUT)
    try:
        agent.connect(path)
    except OSError as exc:
        agent.close()
        raise GrpcError(Status.UNAVAILABLE, f"cannot reach the ssh agent at {path}: {exc.strerror or exc}") from None
    agent.settimeout(None)  # an agent may wait for the user to confirm a key's use (ssh-add -c)
    return agent


def relay(call: Call, agent: socket.socket) -> None:
    """Requests from the call to the agent, each reply back; ends when either side does."""
    pending = bytearray()
    while True:
        message = call.recv()
        if message is None:  # the process in the RUN step closed its connection
            return
        pending += proto.bytes_message_data(message)
        for request in split_requests(pending):
            if request[_LENGTH.size] not in READ_ONLY:
                call.send(proto.bytes_message(failure_reply()))
                continue
            try:
                agent.sendall(request)
            except OSError:
                return  # the agent went away: the RUN step's client sees its connection end
            reply = _read_reply(agent)
            if reply is None:
                return
            call.send(proto.bytes_message(reply))


def forward_agent(agents: Mapping[str, str]) -> Handler:
    def handle(call: Call) -> None:
        path = agent_path(agents, call.metadata.get(ID_METADATA, ""))
        agent = _connect(path)
        call.on_cancel(lambda: _shutdown(agent))
        try:
            relay(call, agent)
        finally:
            agent.close()

    return handle


def _shutdown(agent: socket.socket) -> None:
    try:
        agent.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in the relay's thread
    except OSError:
        pass


def handlers(agents: Mapping[str, str]) -> dict[str, Handler]:
    def check_agent(request: bytes, metadata: Mapping[str, str]) -> bytes:
        agent_path(agents, proto.check_agent_request_id(request))
        return b""

    return {CHECK_AGENT: unary(check_agent), FORWARD_AGENT: forward_agent(dict(agents))}
