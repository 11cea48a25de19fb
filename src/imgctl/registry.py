"""imgctl's own requests to a registry's HTTP API: which digest a tag holds, what an image
stored there was built from, how big it is, and tags added without a push.

This is how imgctl confirms every push independently of the engine's stream. Who imgctl is to
the registry is registry_auth's job; how the requests travel (HTTP or HTTPS, CAs, proxies) is
transport's. A tag may point at an image index (a multi-arch base, or an image another tool
pushed with attestations): every question here has an answer for that too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any

import requests

from imgctl import __version__
from imgctl.auth import Credentials
from imgctl.errors import AuthFailed, ImgctlError, RegistryError
from imgctl.registry_auth import RegistryAuth, Scope, reason, retry_after
from imgctl.transport import base_url, new_session

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
# Without this Accept header registry 2.8 answers a schema1 manifest with another digest.
MANIFEST_TYPES = ", ".join([DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX])
USER_AGENT = f"imgctl/{__version__}"
MAX_CHILDREN = 64  # children of one index read for its size: an index is a handful of platforms


@dataclass(frozen=True)
class PullLimit:
    limit: str | None  # as the registry words it: `100;w=21600` is 100 pulls per 6 hours
    remaining: str | None
    retry_after: float | None


class Manifest:
    """A manifest as the registry sent it: its bytes are what a tag PUT must send back."""

    def __init__(self, body: bytes, media_type: str, digest: str) -> None:
        self.body, self.media_type, self.digest = body, media_type, digest
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        self.data: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        self.media_type = media_type or str(self.data.get("mediaType") or DOCKER_MANIFEST)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or "manifests" in self.data

    @property
    def children(self) -> list[dict[str, Any]]:
        return [m for m in self.data.get("manifests") or [] if isinstance(m, dict) and m.get("digest")]

    def blob_sizes(self) -> dict[str, int]:
        """Digest -> size of the config and layers of a single image's manifest."""
        blobs = [self.data.get("config"), *(self.data.get("layers") or [])]
        return {b["digest"]: int(b["size"]) for b in blobs if isinstance(b, dict) and "digest" in b and "size" in b}


class RegistryClient:
    def __init__(
        self, host: str, creds: Credentials | None, *, timeout: float = 15.0, insecure: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.creds = creds
        self.timeout = timeout
        self.base = base_url(host, insecure=insecure)
        self.session = new_session(host)
        self.session.headers["User-Agent"] = USER_AGENT
        self.auth = RegistryAuth(host, self.base, creds, self.session, timeout=timeout)
        self._manifests: dict[tuple[str, str], Manifest] = {}  # (path, digest): what a digest names never changes
        # (path, tag) -> the digest this client last read or wrote there (None: absent); only for
        # what may be a moment old (a size to report), never to confirm a tag
        self._tags: dict[tuple[str, str], str | None] = {}

    def check_access(self, paths: list[str], actions: str = "pull,push") -> None:
        """Prove now that the credentials may push to (or, with `actions="pull"`, read) every
        repository of `paths` (one token request for them all), so that a wrong password fails
        before anything is built or moved."""
        if self.creds is not None:
            self.auth.check(tuple((path, actions) for path in paths))

    def manifest_digest(self, path: str, reference: str) -> str | None:
        """The digest `path:reference` points at (an index's own, for an index); None if absent."""
        response = self._request("HEAD", path, "manifests", reference)
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise RegistryError(f"{self.host} answered without a Docker-Content-Digest for {path}:{reference}")
        return digest

    def manifest(self, path: str, reference: str, *, push: bool = False, recent: bool = False) -> Manifest | None:
        """The manifest `path:reference` names; None if absent. Kept for a digest reference.
        `recent`: a tag's manifest as this client last saw it, if it did, without asking again."""
        if (path, reference) in self._manifests:
            return self._manifests[path, reference]
        if recent and (path, reference) in self._tags:
            seen = self._tags[path, reference]
            if seen is None or (path, seen) in self._manifests:
                return self._manifests[path, seen] if seen else None
        response = self._request("GET", path, "manifests", reference, push=push)
        tagged = not reference.startswith("sha256:")
        if response.status_code == 404:
            if tagged:
                self._tags[path, reference] = None
            return None
        found = Manifest(response.content, response.headers.get("Content-Type", "").split(";")[0].strip(),
                         response.headers.get("Docker-Content-Digest", ""))
        # Kept under its digest, fetched by digest or by tag (checked: a digest names these bytes
        # only), so that adding a tag to it later is a single PUT.
        actual = "sha256:" + hashlib.sha256(found.body).hexdigest()
        if actual in (reference, found.digest):
            self._manifests[path, actual] = found
            if tagged:
                self._tags[path, reference] = actual
        return found

    def inputs_of(self, path: str, reference: str, label: str) -> tuple[str, str, str | None] | None:
        """(manifest digest, config digest: the image id, value of `label` in the image config) of
        `path:reference`; None if absent, or an index (imgctl pushes single images: an index
        there was put by something else, and so holds no build of these inputs)."""
        found = self.manifest(path, reference)
        if found is None or found.is_index:
            return None
        config = found.data.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            return None
        blob = self.blob(path, config["digest"])
        try:
            labels = (json.loads(blob or b"{}").get("config") or {}).get("Labels") or {}
        except (ValueError, AttributeError):
            labels = {}
        value = labels.get(label) if isinstance(labels, dict) else None
        return found.digest, config["digest"], value if isinstance(value, str) else None

    def stored_size(self, path: str, reference: str, *, recent: bool = False) -> int | None:
        """Bytes the registry stores for `path:reference`: config and compressed layers, each
        blob once; for an index, those of every child it lists. None if absent. `recent` as for
        manifest()."""
        found = self.manifest(path, reference, recent=recent)
        if found is None:
            return None
        if not found.is_index:
            sizes = found.blob_sizes()
            return sum(sizes.values()) if sizes else None
        blobs: dict[str, int] = {}
        for child in found.children[:MAX_CHILDREN]:
            manifest = self.manifest(path, str(child["digest"]))
            if manifest is None or manifest.is_index:
                continue
            blobs.update(manifest.blob_sizes())
        return sum(blobs.values()) if blobs else None

    def add_tag(self, path: str, digest: str, tag: str) -> None:
        """Point `tag` at the manifest `digest` already in the repository: a tag without a push."""
        found = self.manifest(path, digest, push=True)
        if found is None:
            raise RegistryError(f"registry {self.host} has no manifest {digest} in {path}")
        put = self._request("PUT", path, "manifests", tag, push=True, body=found.body, content_type=found.media_type)
        if put.status_code != 201:
            raise RegistryError(f"registry {self.host} answered {put.status_code} when tagging {path}:{tag}")
        self._tags[path, tag] = digest

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest (an index imgctl assembled, say) under a tag or its digest; its digest."""
        put = self._request("PUT", path, "manifests", reference, body=body, content_type=media_type)
        if put.status_code != 201:
            raise RegistryError(f"registry {self.host} answered {put.status_code} when storing {path}:{reference}")
        digest = put.headers.get("Docker-Content-Digest", "")
        if not digest:
            raise RegistryError(f"{self.host} stored {path}:{reference} without saying its digest")
        return digest

    def blob(self, path: str, digest: str) -> bytes | None:
        """A small blob (an image config), whole; None if absent."""
        response = self._request("GET", path, "blobs", digest)
        return None if response.status_code == 404 else response.content

    def pull_limit(self, path: str, reference: str) -> PullLimit:
        """What the registry says of its pull limit, read from a HEAD of the manifest: Docker Hub
        counts GETs only, and sends its `ratelimit-*` headers on every answer."""
        try:
            response = self._send("HEAD", path, "manifests", reference)
        except ImgctlError:
            return PullLimit(None, None, None)
        headers = response.headers
        return PullLimit(headers.get("ratelimit-limit"), headers.get("ratelimit-remaining"), retry_after(response))

    def _request(
        self, method: str, path: str, kind: str, reference: str, *, push: bool = False,
        body: bytes | None = None, content_type: str | None = None,
    ) -> requests.Response:
        """A request whose refusals and faults are imgctl's errors; a 404 is an answer."""
        response = self._send(method, path, kind, reference, push=push, body=body, content_type=content_type)
        what = f"{path}/{kind}/{reference}"
        if response.status_code in (401, 403):
            doing = "writing" if method == "PUT" else "reading"
            raise AuthFailed(f"registry {self.host} refused {self.auth.who} {doing} {what}")
        if response.status_code == 429 or response.status_code >= 500:
            raise RegistryError(f"registry {self.host} answered {response.status_code} for {method} {what}",
                                transient=True, retry_after=retry_after(response))
        if response.status_code not in (200, 201, 404):
            raise RegistryError(f"registry {self.host} answered {response.status_code} for {method} {what}")
        return response

    def _send(
        self, method: str, path: str, kind: str, reference: str, *, push: bool = False,
        body: bytes | None = None, content_type: str | None = None,
    ) -> requests.Response:
        """The request with the credentials the registry asks for, whatever it answers."""
        scopes: tuple[Scope, ...] = ((path, "pull,push" if push or method == "PUT" else "pull"),)
        headers = {"Content-Type": content_type} if content_type else {}
        return self.send(method, f"/v2/{path}/{kind}/{reference}", scopes, headers=headers, data=body)

    def send(
        self, method: str, url: str, scopes: tuple[Scope, ...], *, headers: dict[str, str] | None = None,
        data: Any = None, params: dict[str, str] | None = None, stream: bool = False, resend: bool = True,
    ) -> requests.Response:
        """One request to `url` (absolute, or a path under the registry's base such as
        `/v2/ns/app/blobs/uploads/`) with the token for `scopes` (several for a cross-repository
        mount), whatever the registry answers. With `resend=False` (a body that streams, and so
        cannot be sent twice) a 401 is returned as it came, not answered by sending again; send
        something small first so that the registry's challenge is known by then. `stream=True`
        leaves the response body unread, for the caller to stream and close."""
        full = url if "://" in url else f"{self.base}{url}"
        renewed = False
        while True:
            sending = {"Accept": MANIFEST_TYPES, **(headers or {})}
            sent = self.auth.header(scopes)
            if sent:
                sending["Authorization"] = sent
            try:
                response = self.session.request(method, full, headers=sending, data=data, params=params,
                                                timeout=self.timeout, stream=stream)
            except requests.RequestException as exc:
                raise RegistryError(f"cannot reach registry {self.host}: {reason(exc)}", transient=True) from None
            if response.status_code != 401 or (sent is not None and renewed) or not resend:
                return response
            # No credentials sent yet (the registry says how), or a token it no longer takes:
            # renewed once, after which a 401 is an auth failure.
            renewed = renewed or sent is not None
            if not self.auth.challenged(response, scopes, sent=sent):
                return response
            response.close()
