"""The image index imgctl assembles from the single-platform images the engine pushed.

The engine pushes each platform's image under its own tag; this module checks each of those
children really is that platform's image, writes one index over them, points every tag at it and
reads it back. Only RegistryClient's public methods are used: no engine, no docker-py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from imgctl.errors import VerifyFailed
from imgctl.platforms import Platform, PlatformError
from imgctl.registry import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Manifest, RegistryClient

IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
# BuildKit's provenance/SBOM manifests sit in an index as unknown/unknown: they are no platform.
UNKNOWN = Platform("unknown", "unknown")


@dataclass(frozen=True)
class Child:
    platform: Platform
    digest: str
    media_type: str
    size: int  # bytes of the child manifest, as the index entry must state them


def sha256_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def platform_of(fields: Any) -> Platform | None:
    """The platform an image config or an index entry states, normalised as Platform.parse does
    (arm64/v8 is arm64), so that what a registry holds compares equal to what the user asked for."""
    if not isinstance(fields, dict):
        return None
    parts = [str(fields.get(key) or "") for key in ("os", "architecture", "variant")]
    if not parts[0] or not parts[1]:
        return None
    try:
        return Platform.parse("/".join(p for p in parts if p))
    except PlatformError:  # something no user could have asked for: keep it, as found, for the message
        return Platform(*parts)


def child_of(client: RegistryClient, path: str, digest: str, platform: Platform) -> Child:
    """The index entry for manifest `digest` of `path`, once its config proves it is `platform`'s image."""
    where = f"{client.host}/{path}@{digest}"
    found = client.manifest(path, digest)
    if found is None:
        raise VerifyFailed(f"{where} (the {platform} image) is not in the registry")
    if found.is_index or found.media_type not in IMAGE_TYPES:
        raise VerifyFailed(f"{where} (the {platform} image) is a {found.media_type}, not a single image manifest")
    if sha256_digest(found.body) != digest:  # the index would promise bytes the registry does not serve
        raise VerifyFailed(f"{where} answered a manifest whose digest is {sha256_digest(found.body)}")
    config = found.data.get("config")
    config_digest = config.get("digest") if isinstance(config, dict) else None
    blob = client.blob(path, config_digest) if isinstance(config_digest, str) else None
    if blob is None:
        raise VerifyFailed(f"{where} (the {platform} image) has no config blob in the registry")
    try:
        stated = platform_of(json.loads(blob))
    except ValueError:
        stated = None
    if stated != platform:
        raise VerifyFailed(f"{where} should be the {platform} image, but its config says {stated or 'no platform'}")
    return Child(platform, digest, found.media_type, len(found.body))


def index_body(children: list[Child]) -> tuple[bytes, str]:
    """The index over `children` and its media type: a Docker manifest list over Docker manifests
    (what the engine pushes; older clients read nothing else), an OCI index otherwise. The same
    children always give the same bytes, hence the same digest: a re-put changes nothing."""
    if not children:
        raise ValueError("an index needs at least one child")
    platforms = [child.platform for child in children]
    if len(set(platforms)) != len(platforms):
        raise ValueError(f"two children for one platform: {', '.join(map(str, sorted(platforms)))}")
    media_type = DOCKER_LIST if all(c.media_type == DOCKER_MANIFEST for c in children) else OCI_INDEX
    entries = [
        {"mediaType": c.media_type, "digest": c.digest, "size": c.size, "platform": c.platform.as_oci()}
        for c in sorted(children, key=lambda c: c.platform)
    ]
    index = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    return json.dumps(index, separators=(",", ":")).encode(), media_type


def put_index(client: RegistryClient, path: str, children: list[Child], tags: list[str]) -> str:
    """Store the index over `children` by its digest, then point each of `tags` at it; its digest.

    By digest first, so that the index exists whole before any tag moves to it (distribution
    accepts a PUT by digest when the digest is the body's)."""
    body, media_type = index_body(children)
    digest = sha256_digest(body)
    for reference in [digest, *tags]:
        stored = client.put_manifest(path, reference, body, media_type)
        if stored != digest:
            raise VerifyFailed(f"{client.host} stored the index {path}:{reference} as {stored}, not {digest}")
    return digest


def verify_index(client: RegistryClient, path: str, tag: str, expected_digest: str, platforms: list[Platform]) -> None:
    """Prove `path:tag` is the index `expected_digest`, with one verified child per platform of
    `platforms` and no other platform: what a puller of any of them will get."""
    where = f"{client.host}/{path}:{tag}"
    found = client.manifest_digest(path, tag)
    if found != expected_digest:
        raise VerifyFailed(f"{where} points at {found or 'nothing'}, not the index {expected_digest}")
    index = client.manifest(path, expected_digest)
    if index is None or not index.is_index:
        what = "nothing" if index is None else f"a {index.media_type}"
        raise VerifyFailed(f"{where} ({expected_digest}) is {what}, not an image index")
    entries = _platform_entries(index)
    for platform in platforms:
        matching = [entry for entry_platform, entry in entries if entry_platform == platform]
        if len(matching) != 1:
            raise VerifyFailed(f"{where} lists {len(matching)} {platform} images, not one")
        entry = matching[0]
        child = child_of(client, path, str(entry["digest"]), platform)
        if (entry.get("mediaType"), entry.get("size")) != (child.media_type, child.size):
            # A client checks the size and type the index states against what it downloads.
            raise VerifyFailed(f"{where} describes its {platform} image {child.digest} as "
                               f"{entry.get('mediaType')} of {entry.get('size')} bytes, but it is "
                               f"{child.media_type} of {child.size}")
    extra = sorted({str(p) for p, _ in entries if p not in platforms})
    if extra:
        raise VerifyFailed(f"{where} also lists {', '.join(extra)}, which was not built")


def platform_digests(client: RegistryClient, path: str, reference: str) -> dict[str, str]:
    """`linux/arm64` -> child digest for the index `path:reference`; {} if absent or a single
    image. The first entry wins where an index lists a platform twice, as pullers choose."""
    found = client.manifest(path, reference)
    if found is None or not found.is_index:
        return {}
    digests: dict[str, str] = {}
    for platform, entry in _platform_entries(found):
        digests.setdefault(str(platform), str(entry["digest"]))
    return digests


def _platform_entries(index: Manifest) -> list[tuple[Platform, dict[str, Any]]]:
    """The index's children that are a platform's image, in the index's order: attestations
    (unknown/unknown) and entries without a platform are left out."""
    entries = []
    for entry in index.children:
        platform = platform_of(entry.get("platform"))
        if platform is not None and platform != UNKNOWN:
            entries.append((platform, entry))
    return entries
