"""The image index imgctl assembles over the per-platform images the engine pushed.

index_body is pure and tested as such; the rest runs against a real docker-registry whose
children the tests upload themselves (an arm64 image cannot be built on this amd64 engine), plus
one child that a real `docker push` made. skopeo and the engine read the result as users will."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from imgctl.auth import Credentials
from imgctl.errors import VerifyFailed
from imgctl.indexes import Child, child_of, index_body, platform_digests, platform_of, put_index, verify_index
from imgctl.platforms import Platform
from imgctl.registry import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryClient
from tests.conftest import AUTH_PASSWORD, AUTH_USER, unique, write_base_context
from tests.support.registry import RegistryServer
from tests.support.tokenauth import TokenRegistry

engine = pytest.mark.engine

AMD64, ARM64, ARMV7 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64"), Platform.parse("linux/arm/v7")
CONFIG_TYPE = {DOCKER_MANIFEST: "application/vnd.docker.container.image.v1+json",
               OCI_MANIFEST: "application/vnd.oci.image.config.v1+json"}
LAYER_TYPE = {DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip",
              OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip"}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(text: str) -> tuple[bytes, str]:
    """A gzipped tar of one file, and its diff id (the digest of the tar)."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        data = text.encode()
        info = tarfile.TarInfo("etc/platform")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return gzip.compress(tar.getvalue(), mtime=0), _sha(tar.getvalue())


def _image(registry: RegistryServer, repo: str, tag: str, media_type: str, config_says: Platform) -> str:
    """Upload an image whose config states `config_says` under `repo:tag`; its manifest digest."""
    layer, diff_id = _layer(str(config_says))
    config = json.dumps({**config_says.as_oci(), "config": {}, "created": "2026-01-01T00:00:00Z",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": CONFIG_TYPE[media_type], "digest": registry.put_blob(repo, config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE[media_type], "digest": registry.put_blob(repo, layer), "size": len(layer)}],
    }).encode()
    return registry.put_manifest(repo, tag, manifest, media_type)


def _children(client: RegistryClient, registry: RegistryServer, repo: str, platforms: list[Platform],
              media_type: str = DOCKER_MANIFEST) -> list[Child]:
    """Each platform's image pushed under its per-platform tag, as the engine does, then checked."""
    return [child_of(client, repo, _image(registry, repo, f"1.0-{p.suffix}", media_type, p), p) for p in platforms]


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def _raw_digest(ref: str) -> str:
    """What skopeo sees at `ref`, hashed by sha256sum as a user would."""
    raw = subprocess.run(f"skopeo inspect --raw --tls-verify=false docker://{ref} | sha256sum",
                         shell=True, capture_output=True, text=True, timeout=60, check=True)
    return "sha256:" + raw.stdout.split()[0]


def _layers(registry: RegistryServer, repo: str, digest: str) -> list[str]:
    return [layer["digest"] for layer in json.loads(registry.get_manifest(repo, digest)[0])["layers"]]


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _child(platform: Platform, media_type: str = DOCKER_MANIFEST, digest: str = "") -> Child:
    return Child(platform, digest or _sha(str(platform).encode()), media_type, 500)


# -- index_body: pure ---------------------------------------------------------------------------


def test_docker_children_make_a_manifest_list() -> None:
    body, media_type = index_body([_child(ARM64), _child(AMD64)])
    assert media_type == DOCKER_LIST
    index = json.loads(body)
    assert index == {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": _child(AMD64).digest, "size": 500,
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": DOCKER_MANIFEST, "digest": _child(ARM64).digest, "size": 500,
         "platform": {"architecture": "arm64", "os": "linux"}},
    ]}
    assert b" " not in body and b"\n" not in body  # compact: no whitespace to vary


def test_oci_or_mixed_children_make_an_oci_index() -> None:
    body, media_type = index_body([_child(ARMV7, OCI_MANIFEST), _child(AMD64, OCI_MANIFEST)])
    assert media_type == OCI_INDEX and json.loads(body)["mediaType"] == OCI_INDEX
    assert [m["platform"] for m in json.loads(body)["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm", "os": "linux", "variant": "v7"}]
    body, media_type = index_body([_child(AMD64, DOCKER_MANIFEST), _child(ARM64, OCI_MANIFEST)])
    assert media_type == OCI_INDEX
    assert [m["mediaType"] for m in json.loads(body)["manifests"]] == [DOCKER_MANIFEST, OCI_MANIFEST]


def test_the_same_children_always_give_the_same_bytes() -> None:
    children = [_child(ARM64), _child(AMD64), _child(ARMV7)]
    assert index_body(children) == index_body(list(reversed(children))) == index_body(children[1:] + children[:1])
    assert index_body(children)[0] != index_body(children[:2])[0]


def test_an_index_needs_children_with_distinct_platforms() -> None:
    with pytest.raises(ValueError, match="at least one child"):
        index_body([])
    with pytest.raises(ValueError, match="two children for one platform"):
        index_body([_child(ARM64), _child(Platform.parse("linux/arm64/v8"), digest="sha256:" + "1" * 64)])


def test_platforms_as_configs_and_entries_state_them() -> None:
    assert platform_of({"os": "linux", "architecture": "arm64", "variant": "v8"}) == ARM64
    assert platform_of({"os": "linux", "architecture": "arm", "variant": "v7"}) == ARMV7
    assert platform_of({"os": "linux", "architecture": "amd64", "config": {}}) == AMD64
    assert platform_of({"os": "Linux", "architecture": "x86_64"}) == AMD64
    assert platform_of({"architecture": "amd64"}) is None and platform_of(None) is None
    assert platform_of({"os": "linux", "architecture": "AMD 64"}) == Platform("linux", "AMD 64")


# -- against a real registry --------------------------------------------------------------------


@engine
def test_a_manifest_list_that_the_registry_skopeo_and_pullers_agree_on(registry: RegistryServer) -> None:
    client = RegistryClient(registry.host, None)
    repo = f"{unique()}/app"
    children = _children(client, registry, repo, [ARM64, AMD64])
    assert [c.media_type for c in children] == [DOCKER_MANIFEST, DOCKER_MANIFEST]
    assert children[0].size == len(registry.get_manifest(repo, "1.0-linux-arm64")[0])

    digest = put_index(client, repo, children, ["1.0", "latest"])
    body, media_type = registry.get_manifest(repo, "1.0")
    assert media_type == DOCKER_LIST and body == index_body(children)[0] and _sha(body) == digest
    assert registry.manifest_digest(repo, "1.0") == registry.manifest_digest(repo, "latest") == digest
    assert registry.manifest_digest(repo, digest) == digest  # stored by digest as well
    assert _raw_digest(f"{registry.host}/{repo}:latest") == digest
    assert sorted(registry.tags(repo)) == ["1.0", "1.0-linux-amd64", "1.0-linux-arm64", "latest"]

    for platform, child in [(ARM64, children[0]), (AMD64, children[1])]:
        seen = json.loads(_skopeo("inspect", "--tls-verify=false", "--override-os", "linux", "--override-arch",
                                  platform.architecture, f"docker://{registry.host}/{repo}:1.0").stdout)
        assert (seen["Os"], seen["Architecture"]) == ("linux", platform.architecture)
        # skopeo 1.9 reports the index's digest, and that platform's child's layers and config
        assert seen["Digest"] == digest and seen["Layers"] == _layers(registry, repo, child.digest)
    verify_index(client, repo, "1.0", digest, [AMD64, ARM64])
    verify_index(client, repo, "latest", digest, [ARM64, AMD64])
    assert platform_digests(client, repo, "1.0") == {"linux/amd64": children[1].digest, "linux/arm64": children[0].digest}
    assert platform_digests(client, repo, "1.0-linux-amd64") == {}  # a single image
    assert platform_digests(client, repo, "no-such-tag") == {}


@engine
def test_oci_children_make_an_oci_index(registry: RegistryServer) -> None:
    client = RegistryClient(registry.host, None)
    repo = f"{unique()}/app"
    children = _children(client, registry, repo, [AMD64, ARMV7], OCI_MANIFEST)
    digest = put_index(client, repo, children, ["2.0"])
    assert registry.get_manifest(repo, "2.0")[1] == OCI_INDEX
    assert registry.manifest_digest(repo, "2.0") == _raw_digest(f"{registry.host}/{repo}:2.0") == digest
    seen = json.loads(_skopeo("inspect", "--tls-verify=false", "--override-os", "linux", "--override-arch", "arm",
                              "--override-variant", "v7", f"docker://{registry.host}/{repo}:2.0").stdout)
    assert seen["Architecture"] == "arm" and seen["Layers"] == _layers(registry, repo, children[1].digest)
    verify_index(client, repo, "2.0", digest, [ARMV7, AMD64])
    assert platform_digests(client, repo, "2.0") == {"linux/amd64": children[0].digest, "linux/arm/v7": children[1].digest}


@engine
def test_an_index_over_a_real_docker_push_is_pulled_by_the_engine(tmp_path: Path, registry: RegistryServer) -> None:
    client = RegistryClient(registry.host, None)
    repo = f"{unique()}/app"
    built = f"{registry.host}/{repo}:1.0-linux-amd64"
    subprocess.run(["docker", "build", "-q", "-t", built, str(write_base_context(tmp_path / "base"))],
                   check=True, capture_output=True, timeout=120)
    image_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", built], check=True,
                              capture_output=True, text=True).stdout.strip()
    subprocess.run(["docker", "push", built], check=True, capture_output=True, timeout=120)
    pushed = registry.manifest_digest(repo, "1.0-linux-amd64") or ""
    children = [child_of(client, repo, pushed, AMD64), *_children(client, registry, repo, [ARM64])]
    digest = put_index(client, repo, children, ["1.0"])
    verify_index(client, repo, "1.0", digest, [AMD64, ARM64])

    subprocess.run(["docker", "rmi", "-f", built], check=True, capture_output=True)
    subprocess.run(["docker", "pull", "-q", f"{registry.host}/{repo}:1.0"], check=True, capture_output=True, timeout=120)
    pulled = json.loads(subprocess.run(["docker", "image", "inspect", f"{registry.host}/{repo}:1.0"], check=True,
                                       capture_output=True, text=True).stdout)[0]
    assert pulled["Id"] == image_id and pulled["Architecture"] == "amd64"
    assert f"{registry.host}/{repo}@{digest}" in pulled["RepoDigests"]  # the engine pulled through the index


@engine
def test_the_same_children_put_again_give_the_same_index(registry: RegistryServer) -> None:
    client = RegistryClient(registry.host, None)
    repo = f"{unique()}/app"
    children = _children(client, registry, repo, [AMD64, ARM64])
    first = put_index(client, repo, children, ["1.0"])
    again = put_index(client, repo, list(reversed(children)), ["1.0", "latest"])
    assert again == first == registry.manifest_digest(repo, "latest")
    assert put_index(client, repo, children, []) == first  # by digest only: no tag moves
    verify_index(client, repo, "latest", first, [AMD64, ARM64])


@engine
def test_verify_index_names_what_is_wrong(registry: RegistryServer) -> None:
    client = RegistryClient(registry.host, None)
    repo = f"{unique()}/app"
    amd64, arm64 = _children(client, registry, repo, [AMD64, ARM64])
    where = f"{registry.host}/{repo}"

    # a platform the index lacks
    only_amd64 = put_index(client, repo, [amd64], ["amd64-only"])
    with pytest.raises(VerifyFailed, match=_exactly(f"{where}:amd64-only lists 0 linux/arm64 images, not one")):
        verify_index(client, repo, "amd64-only", only_amd64, [AMD64, ARM64])
    # a platform that was not asked for
    both = put_index(client, repo, [amd64, arm64], ["both"])
    with pytest.raises(VerifyFailed, match=_exactly(f"{where}:both also lists linux/arm64, which was not built")):
        verify_index(client, repo, "both", both, [AMD64])

    # an entry that claims arm/v7 for the arm64 image
    lying = put_index(client, repo, [amd64, Child(ARMV7, arm64.digest, arm64.media_type, arm64.size)], ["lying"])
    with pytest.raises(VerifyFailed, match=_exactly(f"{where}@{arm64.digest} should be the linux/arm/v7 image, but its config says linux/arm64")):
        verify_index(client, repo, "lying", lying, [AMD64, ARMV7])
    with pytest.raises(VerifyFailed, match="should be the linux/amd64 image, but its config says linux/arm64"):
        child_of(client, repo, arm64.digest, AMD64)

    # an entry whose size is not the child's
    wrong_size = put_index(client, repo, [amd64, Child(ARM64, arm64.digest, arm64.media_type, arm64.size + 1)], ["size"])
    with pytest.raises(VerifyFailed, match=re.escape(f"describes its linux/arm64 image {arm64.digest} as {DOCKER_MANIFEST} of {arm64.size + 1} bytes")):
        verify_index(client, repo, "size", wrong_size, [AMD64, ARM64])

    # the tag points elsewhere, or nowhere
    with pytest.raises(VerifyFailed, match=_exactly(f"{where}:both points at {both}, not the index {only_amd64}")):
        verify_index(client, repo, "both", only_amd64, [AMD64])
    with pytest.raises(VerifyFailed, match=_exactly(f"{where}:1.0-linux-amd64 points at {amd64.digest}, not the index {both}")):
        verify_index(client, repo, "1.0-linux-amd64", both, [AMD64])
    with pytest.raises(VerifyFailed, match=_exactly(f"{where}:gone points at nothing, not the index {both}")):
        verify_index(client, repo, "gone", both, [AMD64])
    # a tag at the single image, checked as if it were the index
    with pytest.raises(VerifyFailed, match=re.escape(f"is a {DOCKER_MANIFEST}, not an image index")):
        verify_index(client, repo, "1.0-linux-amd64", amd64.digest, [AMD64])
    with pytest.raises(VerifyFailed, match=_exactly(f"{where}@{both} (the linux/amd64 image) is a {DOCKER_LIST}, not a single image manifest")):
        child_of(client, repo, both, AMD64)

    # a child deleted from the registry after the index was put
    gone = registry.session.delete(f"{registry.url}/v2/{repo}/manifests/{arm64.digest}", timeout=10)
    assert gone.status_code == 202, gone.text
    fresh = RegistryClient(registry.host, None)  # the first client rightly remembers what a digest named
    with pytest.raises(VerifyFailed, match=_exactly(f"{where}@{arm64.digest} (the linux/arm64 image) is not in the registry")):
        verify_index(fresh, repo, "both", both, [AMD64, ARM64])
    with pytest.raises(VerifyFailed, match="is not in the registry"):
        child_of(fresh, repo, "sha256:" + "0" * 64, AMD64)


@engine
def test_platform_digests_leave_attestations_out(registry: RegistryServer) -> None:
    client = RegistryClient(registry.host, None)
    repo = f"{unique()}/app"
    amd64, arm64 = _children(client, registry, repo, [AMD64, ARM64], OCI_MANIFEST)
    statement = b'{"_type":"https://in-toto.io/Statement/v0.1"}'
    config = b"{}"
    attestation = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": registry.put_blob(repo, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": registry.put_blob(repo, statement), "size": len(statement)}],
    }).encode()
    attested = registry.put_manifest(repo, "attestation", attestation, OCI_MANIFEST)
    entries = [{"mediaType": c.media_type, "digest": c.digest, "size": c.size, "platform": c.platform.as_oci()} for c in (amd64, arm64)]
    entries.append({"mediaType": OCI_MANIFEST, "digest": attested, "size": len(attestation),
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amd64.digest}})
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    digest = registry.put_manifest(repo, "buildx", body, OCI_INDEX)

    assert platform_digests(client, repo, "buildx") == {"linux/amd64": amd64.digest, "linux/arm64": arm64.digest}
    assert platform_digests(client, repo, digest) == platform_digests(client, repo, "buildx")
    verify_index(client, repo, "buildx", digest, [ARM64, AMD64])  # an attestation is no extra platform


@engine
def test_put_and_verify_through_token_auth(token_registry: TokenRegistry) -> None:
    client = RegistryClient(token_registry.host, Credentials(AUTH_USER, AUTH_PASSWORD, "test"))
    repo = f"{unique()}/app"
    children = _children(client, token_registry, repo, [AMD64, ARM64])
    digest = put_index(client, repo, children, ["1.0", "latest"])
    assert token_registry.manifest_digest(repo, "latest") == digest
    verify_index(client, repo, "latest", digest, [AMD64, ARM64])
    asked = token_registry.service.issued(AUTH_USER, agent="imgctl/")
    assert any(f"repository:{repo}:pull,push" in r.scopes for r in asked), asked
