"""The protobuf wire format of a BuildKit session's messages, by hand.

Every message the session serves is flat (a string, a bytes, an enum: at most two fields), so a
varint and a length prefix are the whole format. The `protobuf` package would bring a compiled
runtime, generated code (or descriptors built at run time) and its version skew, for five messages;
imgctl.buildkit reads BuildKit's progress records the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class DecodeError(ValueError):
    """Bytes that are not a protobuf message."""


def encode_varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # proto3 int32/int64: two's complement in ten bytes
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, i: int = 0) -> tuple[int, int]:
    """(value, index after it) of the varint at data[i]."""
    result = 0
    for n in range(_MAX_VARINT_BYTES):
        if i >= len(data):
            raise DecodeError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << (7 * n)
        if not byte & 0x80:
            return result, i
    raise DecodeError("varint longer than ten bytes")


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one message, in wire order: an int for a varint, bytes otherwise."""
    i = 0
    while i < len(data):
        key, i = decode_varint(data, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: int | bytes
        if wire == VARINT:
            value, i = decode_varint(data, i)
        elif wire in (FIXED64, LENGTH, FIXED32):
            if wire == LENGTH:
                size, i = decode_varint(data, i)
            else:
                size = 8 if wire == FIXED64 else 4
            if i + size > len(data):
                raise DecodeError("truncated field")
            value, i = data[i:i + size], i + size
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        yield number, value


def get_bytes(data: bytes, number: int) -> bytes:
    """A bytes or string field (the last one wins, as proto3 merges scalars); b"" when absent."""
    found = b""
    for n, value in fields(data):
        if n == number:
            if not isinstance(value, bytes):
                raise DecodeError(f"field {number} is a varint, not bytes")
            found = value
    return found


def get_string(data: bytes, number: int) -> str:
    try:
        return get_bytes(data, number).decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"field {number} is not UTF-8") from None


def bytes_field(number: int, value: bytes) -> bytes:
    """A length-delimited field; nothing for b"" (proto3 omits defaults)."""
    if not value:
        return b""
    return encode_varint(number << 3 | LENGTH) + encode_varint(len(value)) + value


def string_field(number: int, value: str) -> bytes:
    return bytes_field(number, value.encode("utf-8"))


def varint_field(number: int, value: int) -> bytes:
    if not value:
        return b""
    return encode_varint(number << 3 | VARINT) + encode_varint(value)


# The messages, by their .proto names (field numbers unchanged from BuildKit v0.8 to today).

HEALTH_SERVING = 1


def health_check_response(status: int = HEALTH_SERVING) -> bytes:
    """grpc.health.v1.HealthCheckResponse {ServingStatus status = 1}."""
    return varint_field(1, status)


def credentials_request_host(message: bytes) -> str:
    """moby.filesync.v1.CredentialsRequest {string Host = 1}."""
    return get_string(message, 1)


def credentials_response(username: str, secret: str) -> bytes:
    """moby.filesync.v1.CredentialsResponse {string Username = 1; string Secret = 2}."""
    return string_field(1, username) + string_field(2, secret)


def secret_request_id(message: bytes) -> str:
    """moby.buildkit.secrets.v1.GetSecretRequest {string ID = 1; map<string,string> annotations = 2}."""
    return get_string(message, 1)


def secret_response(data: bytes) -> bytes:
    """moby.buildkit.secrets.v1.GetSecretResponse {bytes data = 1}."""
    return bytes_field(1, data)


def check_agent_request_id(message: bytes) -> str:
    """moby.sshforward.v1.CheckAgentRequest {string ID = 1}; the response is empty."""
    return get_string(message, 1)


def bytes_message(data: bytes) -> bytes:
    """moby.sshforward.v1.BytesMessage {bytes data = 1}: one chunk of a forwarded agent connection."""
    return bytes_field(1, data)


def bytes_message_data(message: bytes) -> bytes:
    return get_bytes(message, 1)
