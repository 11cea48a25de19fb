"""history_from_registry against a real docker-registry: an image `docker build` made and `docker
push` stored, compared with what `docker history` says of it; an index over it and an arm64 child
the test uploads itself; and the pairing of config history with manifest layers, pure."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from imgctl import api
from imgctl.errors import ImgctlError, UsageError
from imgctl.indexes import child_of, put_index
from imgctl.platforms import Platform
from imgctl.registry import DOCKER_MANIFEST, RegistryClient
from imgctl.remote_history import MISSING, history_from_registry, pair
from tests.conftest import unique, write_base_context
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.engine

AMD64, ARM64, ARMV7 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64"), Platform.parse("linux/arm/v7")
EXTRA = 'ENV GREETING=hello\nRUN echo "$GREETING" > /greeting\nLABEL purpose=history\n'
ARM64_HISTORY = [
    {"created": "2026-01-01T00:00:00.123456789Z", "created_by": "COPY busybox /bin/busybox # arm64",
     "comment": "buildkit.dockerfile.v0"},
    {"created": "2026-01-01T00:00:01Z", "created_by": 'CMD ["sh"]', "empty_layer": True},
]


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _pushed(tmp_path: Path, registry: RegistryServer, repo: str) -> str:
    """`docker build` + `docker push` of busybox FROM scratch with a few more steps; its reference."""
    reference = f"{registry.host}/{repo}:1.0"
    _docker("build", "-q", "-t", reference, str(write_base_context(tmp_path / "ctx", EXTRA)))
    _docker("push", reference)
    return reference


def _arm64_image(registry: RegistryServer, repo: str, tag: str) -> str:
    """An arm64 image uploaded by hand (this amd64 engine builds none quickly); its manifest digest."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("etc/platform")
        info.size = len(b"linux/arm64")
        archive.addfile(info, io.BytesIO(b"linux/arm64"))
    layer = gzip.compress(tar.getvalue(), mtime=0)
    config = json.dumps({"architecture": "arm64", "os": "linux", "config": {}, "history": ARM64_HISTORY,
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": registry.put_blob(repo, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": registry.put_blob(repo, layer), "size": len(layer)}],
    }).encode()
    return registry.put_manifest(repo, tag, manifest, DOCKER_MANIFEST)


def test_a_pushed_image_has_the_history_docker_shows(tmp_path: Path, registry: RegistryServer) -> None:
    repo = f"{unique()}/app"
    reference = _pushed(tmp_path, registry, repo)
    client = RegistryClient(registry.host, None)

    entries = history_from_registry(client, repo, "1.0", None)

    assert [e["CreatedBy"] for e in entries] == _docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", reference).splitlines()
    assert entries[0]["Id"] == _docker("image", "inspect", "--format", "{{.Id}}", reference).strip()
    assert entries[0]["Tags"] == [reference] and {e["Id"] for e in entries[1:]} == {MISSING}
    engine = api.new_engine().history(reference)  # what `imgctl history` shows of the local image
    assert [(e["Created"], e["Comment"]) for e in entries] == [(e["Created"], e["Comment"]) for e in engine]
    # Compressed sizes, newest first, one per layer the manifest lists; the other steps have none.
    manifest = json.loads(registry.get_manifest(repo, "1.0")[0])
    assert [e["Size"] for e in entries if e["Size"]] == [layer["size"] for layer in reversed(manifest["layers"])]
    docker_sizes = _docker("history", "--no-trunc", "--human=false", "--format", "{{.Size}}", reference).split()
    assert [e["Size"] == 0 for e in entries] == [size == "0" for size in docker_sizes]
    # The same image by its digest: no tag to show.
    by_digest = history_from_registry(client, repo, registry.manifest_digest(repo, "1.0") or "", AMD64)
    assert [e["CreatedBy"] for e in by_digest] == [e["CreatedBy"] for e in entries] and by_digest[0]["Tags"] is None


def test_an_index_gives_the_history_of_the_platform_asked_for(tmp_path: Path, registry: RegistryServer) -> None:
    repo = f"{unique()}/app"
    _pushed(tmp_path, registry, repo)
    client = RegistryClient(registry.host, None)
    amd64 = child_of(client, repo, registry.manifest_digest(repo, "1.0") or "", AMD64)
    arm64 = child_of(client, repo, _arm64_image(registry, repo, "1.0-linux-arm64"), ARM64)
    put_index(client, repo, [amd64, arm64], ["multi"])

    assert history_from_registry(client, repo, "multi", AMD64)[1:] == history_from_registry(client, repo, "1.0", None)[1:]
    arm = history_from_registry(client, repo, "multi", Platform.parse("linux/aarch64"))
    assert [(e["CreatedBy"], e["Created"], e["Comment"], e["Size"] > 0) for e in arm] == [
        ('CMD ["sh"]', 1767225601, "", False),
        ("COPY busybox /bin/busybox # arm64", 1767225600, "buildkit.dockerfile.v0", True),
    ]
    assert arm[0]["Tags"] == [f"{registry.host}/{repo}:multi"]

    with pytest.raises(UsageError, match=r"multi-platform image: choose one with --platform \(linux/amd64, linux/arm64\)$"):
        history_from_registry(client, repo, "multi", None)
    with pytest.raises(UsageError, match=r":multi has no linux/arm/v7 image; its platforms: linux/amd64, linux/arm64$"):
        history_from_registry(client, repo, "multi", ARMV7)


def test_a_single_image_of_another_platform_is_a_usage_error(registry: RegistryServer) -> None:
    repo = f"{unique()}/app"
    _arm64_image(registry, repo, "arm")
    client = RegistryClient(registry.host, None)
    assert len(history_from_registry(client, repo, "arm", ARM64)) == 2
    with pytest.raises(UsageError, match=r"/app:arm is the linux/arm64 image, not linux/amd64$"):
        history_from_registry(client, repo, "arm", AMD64)


def test_a_missing_tag_is_no_such_image(registry: RegistryServer) -> None:
    repo = f"{unique()}/app"
    _arm64_image(registry, repo, "arm")
    client = RegistryClient(registry.host, None)
    for path, tag in [(repo, "nope"), (f"{unique()}/absent", "1.0")]:
        with pytest.raises(ImgctlError, match="^no such image in the registry: ") as raised:
            history_from_registry(client, path, tag, None)
        assert raised.value.message.endswith(f"{registry.host}/{path}:{tag}") and not isinstance(raised.value, UsageError)


# -- pair: pure --------------------------------------------------------------------------------


def test_each_entry_without_empty_layer_owns_the_next_layer() -> None:
    history = [
        {"created": "2026-01-01T00:00:00Z", "created_by": "ADD rootfs"},
        {"created": "2026-01-01T00:00:01Z", "created_by": "ENV A=1", "empty_layer": True},
        {"created": "2026-01-01T00:00:02Z", "created_by": "RUN make", "comment": "buildkit.dockerfile.v0"},
        {"created_by": "CMD [\"sh\"]", "empty_layer": True},
    ]
    assert pair(history, [700, 30]) == [
        {"Id": MISSING, "Created": 0, "CreatedBy": 'CMD ["sh"]', "Size": 0, "Comment": "", "Tags": None},
        {"Id": MISSING, "Created": 1767225602, "CreatedBy": "RUN make", "Size": 30, "Comment": "buildkit.dockerfile.v0", "Tags": None},
        {"Id": MISSING, "Created": 1767225601, "CreatedBy": "ENV A=1", "Size": 0, "Comment": "", "Tags": None},
        {"Id": MISSING, "Created": 1767225600, "CreatedBy": "ADD rootfs", "Size": 700, "Comment": "", "Tags": None},
    ]


def test_layers_without_history_still_show_and_too_few_layers_fail() -> None:
    assert [(e["CreatedBy"], e["Size"]) for e in pair([{"created_by": "ADD x"}], [5, 6])] == [("", 6), ("ADD x", 5)]
    assert [e["Size"] for e in pair([], [5])] == [5]
    with pytest.raises(ImgctlError, match="describes 2 layers, its manifest lists 1"):
        pair([{"created_by": "ADD x"}, {"created_by": "RUN y"}], [5])
