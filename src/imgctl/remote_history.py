"""`docker history` for an image that is only in the registry: read from its manifest and config.

Only RegistryClient's public methods are used: no engine, no docker-py.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from imgctl.errors import ImgctlError, UsageError
from imgctl.indexes import platform_digests, platform_of
from imgctl.platforms import Platform
from imgctl.registry import RegistryClient

MISSING = "<missing>"  # docker's Id for a layer it holds no image for: every layer but the top one


def history_from_registry(
    client: RegistryClient, path: str, reference: str, platform: Platform | None,
) -> list[dict[str, Any]]:
    """The layers of `path:reference` in the registry, newest first, in the shape of the engine's
    /images/{name}/history ("Id", "Created" in unix seconds, "CreatedBy", "Size", "Comment", "Tags").

    For an index, the child for `platform` (a UsageError names the platforms there are, if it is
    missing or None); for a single image, `platform` (if given) must be what its config states.

    Sizes differ from `docker history`'s: the registry stores each layer compressed (gzip, as
    pushed) and states those sizes in the manifest, while the engine reports a layer's unpacked
    size. Only the top entry has an Id (the config digest, the image id) and Tags, as in
    `docker history` of a pulled image.
    """
    where = f"{client.host}/{path}{'@' if reference.startswith('sha256:') else ':'}{reference}"
    found = client.manifest(path, reference)
    if found is None:
        raise ImgctlError(f"no such image in the registry: {where}")
    if found.is_index:
        children = platform_digests(client, path, reference)
        listed = ", ".join(sorted(children)) or "none"
        if platform is None:
            raise UsageError(f"{where} is a multi-platform image: choose one with --platform ({listed})")
        if str(platform) not in children:
            raise UsageError(f"{where} has no {platform} image; its platforms: {listed}")
        found = client.manifest(path, children[str(platform)])
        if found is None or found.is_index:
            raise ImgctlError(f"{where}: its {platform} image is not a single image in the registry")
    config = found.data.get("config")
    config_digest = config.get("digest") if isinstance(config, dict) else None
    blob = client.blob(path, config_digest) if isinstance(config_digest, str) else None
    try:
        image = json.loads(blob) if blob is not None else None
    except ValueError:
        image = None
    if not isinstance(image, dict) or not isinstance(config_digest, str):
        raise ImgctlError(f"{where} has no readable image config in the registry")
    if platform is not None and not found.is_index and (stated := platform_of(image)) != platform:
        raise UsageError(f"{where} is the {stated or 'unknown'} image, not {platform}")
    sizes = [int(layer.get("size") or 0) for layer in found.data.get("layers") or [] if isinstance(layer, dict)]
    history = [entry for entry in image.get("history") or [] if isinstance(entry, dict)]
    entries = pair(history, sizes, where)
    if entries:
        entries[0]["Id"] = config_digest
        entries[0]["Tags"] = None if reference.startswith("sha256:") else [f"{client.host}/{path}:{reference}"]
    return entries


def pair(history: list[dict[str, Any]], sizes: list[int], where: str = "the image") -> list[dict[str, Any]]:
    """Newest-first entries from the config's `history` (oldest first) and the manifest's layer
    sizes (bottom first): each entry without `empty_layer` owns the next layer, as the engine pairs
    them; an empty_layer entry (ENV, CMD...) has Size 0. Layers no entry describes (an image
    written without history) get an entry each, with nothing to say how they were made."""
    owners = [entry for entry in history if not entry.get("empty_layer")]
    if len(owners) > len(sizes):
        raise ImgctlError(f"{where}: its config describes {len(owners)} layers, its manifest lists {len(sizes)}")
    remaining = iter(sizes)
    entries = [_entry(e, 0 if e.get("empty_layer") else next(remaining)) for e in history]
    entries += [_entry({}, size) for size in remaining]
    return entries[::-1]


def _entry(fields: dict[str, Any], size: int) -> dict[str, Any]:
    return {"Id": MISSING, "Created": _unix(fields.get("created")), "CreatedBy": str(fields.get("created_by") or ""),
            "Size": size, "Comment": str(fields.get("comment") or ""), "Tags": None}


def _unix(created: Any) -> int:
    """RFC 3339 (`2026-01-01T00:00:00.123456789Z`) as unix seconds; 0 if absent, as the engine says."""
    if not isinstance(created, str) or not created:
        return 0
    try:  # Python 3.11 reads the Z and drops digits past the microseconds
        return int(datetime.fromisoformat(created).timestamp())
    except ValueError:
        return 0
