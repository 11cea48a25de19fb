"""Tags that already point at an image index: a multi-arch base, or an image another tool pushed
with an attestation beside it. The indexes are assembled in a real registry by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgctl.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient
from imgctl.units import human_bytes
from tests.conftest import unique
from tests.support.registry import RegistryServer
from tests.test_release import two_image_config

pytestmark = pytest.mark.engine

EPOCH = {"SOURCE_DATE_EPOCH": "1767225600"}


def _attestation(registry: RegistryServer, repo: str) -> dict[str, object]:
    """An in-toto attestation manifest as BuildKit attaches it (platform unknown/unknown)."""
    config = b"{}"
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2"}).encode()
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": registry.put_blob(repo, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": registry.put_blob(repo, statement), "size": len(statement)}],
    }).encode()
    digest = registry.put_manifest(repo, "attestation", body, OCI_MANIFEST)
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}


def _index_over(registry: RegistryServer, repo: str, image_tag: str, tags: list[str]) -> tuple[str, int]:
    """Point `tags` at an OCI index of `repo:image_tag` (linux/amd64) plus an attestation; return
    the index digest and the bytes its children store (each blob once)."""
    body, media_type = registry.get_manifest(repo, image_tag)
    image = json.loads(body)
    child = {"mediaType": media_type, "digest": registry.manifest_digest(repo, image_tag), "size": len(body),
             "platform": {"architecture": "amd64", "os": "linux"}}
    attestation = _attestation(registry, repo)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child, attestation]}).encode()
    digest = ""
    for tag in tags:
        digest = registry.put_manifest(repo, tag, index, OCI_INDEX)
    blobs = {}
    for manifest in (image, json.loads(registry.get_manifest(repo, "attestation")[0])):
        blobs |= {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}
    return digest, sum(blobs.values())


def test_the_registry_client_answers_for_an_index(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    ns = unique()
    config = two_image_config(tmp_path, registry.host, ns)
    assert imgctl("release", "-c", str(config), "--version", "1.0.0").code == 0
    digest, stored = _index_over(registry, f"{ns}/app", "1.0.0", ["multi"])

    client = RegistryClient(registry.host, None)
    assert client.manifest_digest(f"{ns}/app", "multi") == digest == registry.manifest_digest(f"{ns}/app", "multi")
    assert client.stored_size(f"{ns}/app", "multi") == stored
    assert client.inputs_of(f"{ns}/app", "multi", "io.imgctl.inputs") is None  # no single build's inputs
    assert client.inputs_of(f"{ns}/app", "1.0.0", "io.imgctl.inputs") is not None
    client.add_tag(f"{ns}/app", digest, "copied")  # a tag added to an index keeps the index whole
    assert registry.manifest_digest(f"{ns}/app", "copied") == digest


def test_a_release_over_tags_that_hold_an_index(tmp_path: Path, registry: RegistryServer, imgctl) -> None:  # type: ignore[no-untyped-def]
    """Verification, unchanged detection, stored size and --skip-unchanged, with the release's
    tags (immutable and floating) already pointing at an index another tool pushed."""
    ns = unique()
    config = two_image_config(tmp_path, registry.host, ns)
    first = imgctl("release", "-c", str(config), "--version", "1.0.0", env=EPOCH)
    assert first.code == 0, first.output
    index, stored = _index_over(registry, f"{ns}/app", "1.0.0", ["1.0.1", "1.0", "latest"])

    run = imgctl("release", "-c", str(config), "--version", "1.0.1", "--skip-unchanged", "--output", "json",
                 "--report", str(tmp_path / "report.json"), env=EPOCH)
    assert run.code == 0, run.output
    assert "Traceback" not in run.output
    # base is unchanged and reused; app's tags held an index, which is no build of these inputs
    assert [e["image"] for e in run.of_type("reused")] == ["base"]
    assert not any(e["reference"].startswith(f"{registry.host}/{ns}/app") for e in run.of_type("unchanged"))
    for tag in ("1.0.1", "1.0", "latest"):
        now = registry.manifest_digest(f"{ns}/app", tag)
        assert now is not None and now != index, tag
    verified = {e["reference"]: e["digest"] for e in run.of_type("verified")}
    assert verified[f"{registry.host}/{ns}/app:1.0.1"] == registry.manifest_digest(f"{ns}/app", "1.0.1")
    report = {row["image"]: row for row in json.loads((tmp_path / "report.json").read_text())["images"]}
    assert report["app"]["previous_size"] == human_bytes(stored)  # the index's children, counted once

    again = imgctl("release", "-c", str(config), "--version", "1.0.1", "--skip-unchanged", "--output", "json", env=EPOCH)
    assert again.code == 0, again.output
    assert sorted(e["image"] for e in again.of_type("reused")) == ["app", "base"]
