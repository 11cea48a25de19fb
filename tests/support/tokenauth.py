"""A token service that plays auth.docker.io's part, and a real `docker-registry` that trusts it.

The registry runs in `auth: token` mode and verifies every JWT for real: its signature against
the certificate bundle written here, its issuer, audience and `exp` (distribution allows 60 s of
leeway past `exp`; `exp` is set that much earlier, so a token dies when `expires_in` says, as it
would at a registry without leeway). Like auth.docker.io the service reads the user's Basic
auth, grants the scopes asked for in the query (several `scope=` parameters allowed), only
those, and answers an anonymous request with pull access where `anonymous_pull` allows it.
With `refresh_tokens` on, it also plays the OAuth2 side the docker CLI meets at ACR or Docker
Desktop: a login asking for `offline_token=true` gets a refresh token, which the CLI stores as
`identitytoken`, and `POST /token` with `grant_type=refresh_token` trades it for an access token.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.registry import RegistryServer, free_port

LEEWAY = 60  # seconds distribution accepts a token past its `exp`


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The `kid` distribution looks a signing key up by: base32 of the first 240 bits of the
    SHA-256 of the DER public key, in groups of four joined by colons."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass(frozen=True)
class TokenRequest:
    """One request the service answered, for the tests to assert on."""

    method: str
    user: str | None  # None: anonymous, or a refresh token's owner unknown
    scopes: tuple[str, ...]
    grant_type: str | None  # None for the GET (Basic auth) flow
    status: int
    offline: bool = False
    agent: str = ""  # User-Agent: the daemon's pushes and imgctl's own requests tell apart


@dataclass
class Fault:
    status: int
    count: int
    retry_after: int | None = None


@dataclass
class TokenService:
    users: dict[str, str]
    service: str = "imgctl-test-registry"
    issuer: str = "imgctl-test-issuer"
    lifetime: int = 300  # expires_in, and how long the registry takes the token
    lies_about_lifetime: int | None = None  # the registry takes it only this long; expires_in still says `lifetime`
    anonymous_pull: bool = True
    refresh_tokens: bool = False
    send_expires_in: bool = True
    token_field: str = "both"  # token | access_token | both
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = libtrust_key_id(self._key.public_key())
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._refresh: dict[str, str] = {}  # refresh token -> user
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    # -- what the registry trusts ------------------------------------------------------------

    def certificate_pem(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def mint(self, subject: str, scopes: list[tuple[str, str, list[str]]], lifetime: int | None = None) -> str:
        """A signed JWT granting `scopes` ((type, name, actions) each)."""
        now = int(time.time())
        life = lifetime if lifetime is not None else self.lies_about_lifetime or self.lifetime
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service,
            "exp": now + life - LEEWAY, "nbf": now - 1, "iat": now, "jti": secrets.token_hex(8),
            "access": [{"type": t, "name": n, "actions": a} for t, n, a in scopes],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    # -- faults --------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int, retry_after: int | None = None) -> None:
        """Answer the next `count` token requests with `status` (and a Retry-After)."""
        with self._lock:
            self._faults.append(Fault(status, count, retry_after))

    def down_for(self, seconds: float) -> None:
        """Stop listening now (connections are refused) and listen again after `seconds`."""
        self.stop()
        timer = threading.Timer(seconds, self.start)
        timer.daemon = True
        timer.start()

    def _take_fault(self) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0:
                    fault.count -= 1
                    return fault
        return None

    # -- policy --------------------------------------------------------------------------------

    def grant(self, user: str | None, scopes: list[str]) -> list[tuple[str, str, list[str]]]:
        """What `user` (None: anonymous) gets of the scopes asked: users everything, anonymous pull."""
        granted = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            wanted = [a for a in actions.split(",") if a]
            allowed = wanted if user is not None else [a for a in wanted if a == "pull" and self.anonymous_pull]
            granted.append((kind, name, allowed))
        return granted

    def issued(self, user: str | None = None, *, agent: str = "") -> list[TokenRequest]:
        """Tokens handed out (to `user`; to clients whose User-Agent starts with `agent`)."""
        with self._lock:
            return [r for r in self.requests if r.status == 200 and (user is None or r.user == user)
                    and r.agent.startswith(agent)]

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _answer(self, user: str | None, scopes: list[str], offline: bool) -> dict[str, object]:
        token = self.mint(user or "", self.grant(user, scopes))
        body: dict[str, object] = {"issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        if self.token_field in ("token", "both"):
            body["token"] = token
        if self.token_field in ("access_token", "both"):
            body["access_token"] = token
        if self.send_expires_in:
            body["expires_in"] = self.lifetime
        if offline and user is not None and self.refresh_tokens:
            refresh = "rt-" + secrets.token_urlsafe(24)
            with self._lock:
                self._refresh[refresh] = user
            body["refresh_token"] = refresh
        return body

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> TokenService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _fault(self, method: str) -> bool:
                fault = service._take_fault()
                if fault is None:
                    return False
                service._record(TokenRequest(method, None, (), None, fault.status, agent=self.headers.get("User-Agent", "")))
                extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                self._send(fault.status, {"errors": [{"code": "UNAVAILABLE", "message": "token service fault"}]}, extra)
                return True

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                scopes = query.get("scope", [])
                offline = query.get("offline_token", [""])[0] == "true"
                if url.path != "/token" or query.get("service", [""])[0] != service.service:
                    self._send(400, {"details": "unknown service"})
                    return
                if self._fault("GET"):
                    return
                user: str | None = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if service.users.get(name) != password:
                        service._record(TokenRequest("GET", name, tuple(scopes), None, 401, offline, self.headers.get("User-Agent", "")))
                        self._send(401, {"details": "incorrect username or password"},
                                   {"WWW-Authenticate": f'Basic realm="{service.realm}"'})
                        return
                    user = name
                service._record(TokenRequest("GET", user, tuple(scopes), None, 200, offline, self.headers.get("User-Agent", "")))
                self._send(200, service._answer(user, scopes, offline))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
                if self._fault("POST"):
                    return
                user: str | None = None
                if grant == "refresh_token":
                    with service._lock:
                        user = service._refresh.get(form.get("refresh_token", [""])[0])
                elif grant == "password":
                    name, password = form.get("username", [""])[0], form.get("password", [""])[0]
                    user = name if service.users.get(name) == password else None
                if user is None:
                    service._record(TokenRequest("POST", None, tuple(scopes), grant, 401, agent=self.headers.get("User-Agent", "")))
                    self._send(401, {"error": "invalid_grant"})
                    return
                service._record(TokenRequest("POST", user, tuple(scopes), grant, 200, agent=self.headers.get("User-Agent", "")))
                body = service._answer(user, scopes, offline=form.get("access_type", [""])[0] == "offline")
                body.pop("token", None)
                body.setdefault("access_token", service.mint(user, service.grant(user, scopes)))
                body["scope"] = " ".join(scopes)
                self._send(200, body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def server_bind(self) -> None:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                super().server_bind()

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class _MintedAuth(requests.auth.AuthBase):
    """Test-side reads of a token registry: a token minted for the repository the URL names."""

    def __init__(self, service: TokenService) -> None:
        self.service = service

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        path = urlsplit(request.url or "").path.removeprefix("/v2/")
        for kind in ("/manifests/", "/blobs/", "/tags/"):
            if kind in path:
                name = path.split(kind, 1)[0]
                token = self.service.mint("test-admin", [("repository", name, ["pull", "push", "delete"])])
                request.headers["Authorization"] = f"Bearer {token}"
        return request


class TokenRegistry(RegistryServer):
    """A real docker-registry in `auth: token` mode, trusting `service`'s signing key."""

    def __init__(self, workdir: Path, service: TokenService, *, port: int | None = None) -> None:
        super().__init__(workdir, port=port)
        self.service = service
        self.session.auth = _MintedAuth(service)

    def _write_config(self) -> None:
        super()._write_config()
        bundle = self.workdir / "token-signer.pem"
        bundle.write_bytes(self.service.certificate_pem())
        with open(self.config_path, "a") as config:
            config.write(
                "auth:\n  token:\n"
                f"    realm: {self.service.realm}\n    service: {self.service.service}\n"
                f"    issuer: {self.service.issuer}\n    rootcertbundle: {bundle}\n"
            )
