"""What a session serves: gRPC methods by path, each a handler of one call.

Health keeps the session alive, Auth hands BuildKit the registry credentials it asks for, Secrets
the values of `RUN --mount=type=secret`; SSH (sshagent.py) forwards `RUN --mount=type=ssh`.
Nothing here logs or puts into an error message a credential or a secret value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from imgctl.session import proto
from imgctl.session.grpc import MAX_MESSAGE, GrpcError, Status

CredentialsLookup = Callable[[str], "tuple[str, str] | None"]
Failed = Callable[[str, BaseException], None]  # (what failed, the exception): for the caller to report


class Call(Protocol):
    """The handler's side of one gRPC call (server.Call)."""

    path: str
    metadata: Mapping[str, str]

    def recv(self) -> bytes | None:
        """The next request message; None once the client has sent its last."""

    def send(self, message: bytes) -> None:
        """One response message, within the peer's flow-control window (blocks until it fits)."""

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run `callback` (once, from another thread) if the call is cancelled or the session ends."""


Handler = Callable[[Call], None]
Unary = Callable[[bytes, Mapping[str, str]], bytes]


def unary(fn: Unary) -> Handler:
    """A handler of one request message and one response message."""

    def handle(call: Call) -> None:
        request = call.recv()
        if request is None:
            raise GrpcError(Status.INTERNAL, f"{call.path}: no request message")
        try:
            response = fn(request, call.metadata)
        except proto.DecodeError as exc:
            raise GrpcError(Status.INVALID_ARGUMENT, f"{call.path}: malformed request: {exc}") from None
        call.send(response)

    return handle


HEALTH = "/grpc.health.v1.Health/Check"
AUTH_CREDENTIALS = "/moby.filesync.v1.Auth/Credentials"
AUTH_TOKEN_AUTHORITY = "/moby.filesync.v1.Auth/GetTokenAuthority"
SECRETS_GET = "/moby.buildkit.secrets.v1.Secrets/GetSecret"
# The largest secret BuildKit v0.8 accepts in one message (its gRPC client's receive limit),
# less the response's own framing.
MAX_SECRET = MAX_MESSAGE - 16


def health(request: bytes, metadata: Mapping[str, str]) -> bytes:
    """SERVING, always: the session is up as long as this answers (BuildKit closes it otherwise)."""
    return proto.health_check_response()


def no_token_authority(request: bytes, metadata: Mapping[str, str]) -> bytes:
    """UNIMPLEMENTED: the daemon then asks Credentials and fetches the registry token itself,
    as it does for a docker CLI that has no token authority key for the host either."""
    raise GrpcError(Status.UNIMPLEMENTED, "no token authority: ask Credentials")


def credentials_handler(lookup: CredentialsLookup, failed: Failed) -> Unary:
    def credentials(request: bytes, metadata: Mapping[str, str]) -> bytes:
        host = proto.credentials_request_host(request)
        try:
            found = lookup(host)
        except Exception as exc:  # the caller's lookup (e.g. a credential helper) failed
            failed(f"credentials for {host}", exc)
            # Its type only: an exception's text could quote what a helper printed.
            raise GrpcError(Status.UNAVAILABLE, f"imgctl could not read the credentials for {host} "
                            f"({type(exc).__name__})") from None
        if found is None:
            return proto.credentials_response("", "")  # anonymous
        username, secret = found
        if not isinstance(username, str) or not isinstance(secret, str):
            failed(f"credentials for {host}", TypeError("the lookup must answer (str, str) or None"))
            raise GrpcError(Status.INTERNAL, f"imgctl's credentials for {host} are not strings")
        return proto.credentials_response(username, secret)

    return credentials


def secrets_handler(secrets: Mapping[str, bytes]) -> Unary:
    def get_secret(request: bytes, metadata: Mapping[str, str]) -> bytes:
        secret_id = proto.secret_request_id(request)
        if secret_id not in secrets:
            # BuildKit's own words: the mount is skipped, or the step fails if it says required=true.
            raise GrpcError(Status.NOT_FOUND, f"secret {secret_id} not found")
        return proto.secret_response(secrets[secret_id])

    return get_secret


def check_secrets(secrets: Mapping[str, bytes]) -> dict[str, bytes]:
    """A private copy, each value bytes and small enough to be sent; ValueError naming the id otherwise."""
    checked = {}
    for secret_id, value in secrets.items():
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ValueError(f"secret {secret_id!r} must be bytes, not {type(value).__name__}")
        if len(value) > MAX_SECRET:
            raise ValueError(f"secret {secret_id!r} is {len(value)} bytes: BuildKit takes at most {MAX_SECRET}")
        checked[str(secret_id)] = bytes(value)
    return checked


def handlers(
    *, credentials: CredentialsLookup, secrets: Mapping[str, bytes], ssh: Mapping[str, str], failed: Failed,
) -> dict[str, Handler]:
    """Every method a session serves, by gRPC path (the session advertises exactly these)."""
    from imgctl.session import sshagent

    served: dict[str, Handler] = {
        HEALTH: unary(health),
        AUTH_CREDENTIALS: unary(credentials_handler(credentials, failed)),
        AUTH_TOKEN_AUTHORITY: unary(no_token_authority),
        SECRETS_GET: unary(secrets_handler(secrets)),
    }
    served.update(sshagent.handlers(ssh))
    return served
