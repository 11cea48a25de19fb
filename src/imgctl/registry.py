"""Asking a registry, over its HTTP API, which digest a tag points at.

This is how imgctl confirms every push independently of the engine's stream. Plain HTTP for
loopback registries (as the engine treats them), HTTPS elsewhere; Basic or Bearer-token auth.
"""

from __future__ import annotations

import ipaddress
import re

import requests

from imgctl.auth import Credentials
from imgctl.errors import AuthFailed, RegistryError
from imgctl.refs import is_docker_hub

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def base_url(host: str) -> str:
    if is_docker_hub(host):
        return "https://registry-1.docker.io"
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        loopback = ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        loopback = name == "localhost"
    return f"{'http' if loopback else 'https'}://{host}"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _reason(exc: requests.RequestException) -> str:
    text = str(exc).lower()
    for known in ("connection refused", "connection reset", "name or service not known", "timed out"):
        if known in text:
            return known
    return "read timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__


class RegistryClient:
    def __init__(self, host: str, creds: Credentials | None, *, timeout: float = 15.0) -> None:
        self.host = host
        self.creds = creds
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never send registry traffic through a proxy from the environment
        self._token: dict[str, str] = {}
        self._manifests: dict[tuple[str, str], tuple[bytes, str]] = {}  # (path, digest) -> (body, media type)

    def manifest_digest(self, path: str, reference: str) -> str | None:
        """The digest `path:reference` points at, or None if the registry has no such tag."""
        response = self._request("HEAD", self._url(path, "manifests", reference), scope=f"repository:{path}:pull")
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise RegistryError(f"{self.host} answered without a Docker-Content-Digest for {path}:{reference}")
        return digest

    def inputs_of(self, path: str, reference: str, label: str) -> tuple[str, str, str | None] | None:
        """(manifest digest, config digest: the image id, value of `label` in the image config) of
        `path:reference`; None if absent, or not a single image."""
        response = self._request("GET", self._url(path, "manifests", reference), scope=f"repository:{path}:pull")
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest", "")
        try:
            config_digest = response.json()["config"]["digest"]
        except (ValueError, KeyError, TypeError):
            return None  # a manifest list, or something imgctl did not push
        blob = self._request("GET", self._url(path, "blobs", config_digest), scope=f"repository:{path}:pull")
        try:
            labels = (blob.json().get("config") or {}).get("Labels") or {}
        except (ValueError, AttributeError):
            labels = {}
        value = labels.get(label)
        return digest, config_digest, value if isinstance(value, str) else None

    def stored_size(self, path: str, reference: str) -> int | None:
        """Bytes the registry stores for `path:reference` (config and compressed layers); None if absent."""
        response = self._request("GET", self._url(path, "manifests", reference), scope=f"repository:{path}:pull")
        if response.status_code == 404:
            return None
        try:
            manifest = response.json()
            return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest["layers"])
        except (ValueError, KeyError, TypeError):
            return None  # a manifest list: no single size

    def add_tag(self, path: str, digest: str, tag: str) -> None:
        """Point `tag` at the manifest `digest` already in the repository: a tag without a push."""
        scope = f"repository:{path}:pull,push"
        if (path, digest) not in self._manifests:  # content-addressed: what a digest names never changes
            got = self._request("GET", self._url(path, "manifests", digest), scope=scope)
            if got.status_code != 200:
                raise RegistryError(f"registry {self.host} has no manifest {digest} in {path}")
            self._manifests[path, digest] = got.content, got.headers.get("Content-Type", MANIFEST_TYPES.split(", ")[0])
        body, content_type = self._manifests[path, digest]
        put = self._request("PUT", self._url(path, "manifests", tag), scope=scope, body=body, content_type=content_type)
        if put.status_code != 201:
            raise RegistryError(f"registry {self.host} answered {put.status_code} when tagging {path}:{tag}")

    def _url(self, path: str, kind: str, reference: str) -> str:
        return f"{base_url(self.host)}/v2/{path}/{kind}/{reference}"

    def _request(
        self, method: str, url: str, *, scope: str, body: bytes | None = None, content_type: str | None = None
    ) -> requests.Response:
        headers = {"Accept": MANIFEST_TYPES}
        if content_type:
            headers["Content-Type"] = content_type
        if scope in self._token:
            headers["Authorization"] = self._token[scope]
        try:
            response = self.session.request(method, url, headers=headers, data=body, timeout=self.timeout)
            if response.status_code == 401 and "Authorization" not in headers:
                headers["Authorization"] = self._authorize(response, scope)
                response = self.session.request(method, url, headers=headers, data=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach registry {self.host}: {_reason(exc)}", transient=True) from None
        if response.status_code in (401, 403):
            who = f"user {self.creds.username!r}" if self.creds else "anonymous access"
            doing = "writing" if method == "PUT" else "reading"
            raise AuthFailed(f"registry {self.host} refused {who} {doing} {url.split('/v2/', 1)[1]}")
        if response.status_code == 429 or response.status_code >= 500:
            raise RegistryError(
                f"registry {self.host} answered {response.status_code} for {method} {url.split('/v2/', 1)[1]}",
                transient=True, retry_after=_retry_after(response),
            )
        if response.status_code not in (200, 201, 404):
            raise RegistryError(f"registry {self.host} answered {response.status_code} for {method} {url}")
        return response

    def _authorize(self, challenge: requests.Response, scope: str) -> str:
        header = challenge.headers.get("WWW-Authenticate", "")
        scheme, _, params = header.partition(" ")
        if scheme.lower() == "basic":
            if not self.creds:
                return ""
            import base64

            raw = f"{self.creds.username}:{self.creds.password}".encode()
            value = "Basic " + base64.b64encode(raw).decode()
        elif scheme.lower() == "bearer":
            fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
            query = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
            auth = (self.creds.username, self.creds.password) if self.creds else None
            try:
                answer = self.session.get(fields["realm"], params=query, auth=auth, timeout=self.timeout)
            except (requests.RequestException, KeyError) as exc:
                raise RegistryError(f"token request to {self.host} failed: {type(exc).__name__}", transient=True) from None
            if answer.status_code != 200:
                raise AuthFailed(f"registry {self.host} refused a token for {scope}")
            body = answer.json()
            value = "Bearer " + str(body.get("token") or body.get("access_token") or "")
        else:
            return ""
        self._token[scope] = value
        return value
