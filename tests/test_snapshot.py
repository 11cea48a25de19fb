"""snapshot: one walk of a context gives its inputs digest and the tar the build sends.

The unit tests compare the replayed tar with a fresh walk byte for byte; the engine test counts
the files a real release opens (the CLI in a subprocess, with the one function that opens a
context file wrapped to count)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imgctl import snapshot as snapshots
from imgctl.context import build_context
from imgctl.snapshot import inputs_digest, snapshot
from tests.conftest import chain_config, unique
from tests.support.registry import RegistryServer

LABELS = {"org.example.team": "core", "io.imgctl.inputs": "sha256:" + "0" * 64}


def tree(root: Path, ignore: str | None = None, big: int = 0) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    (root / "src" / "main.py").write_text("print('hi')\n")
    (root / "src" / "notes.log").write_text("ignored\n")
    os.symlink("src/main.py", root / "link")
    os.link(root / "src" / "main.py", root / "hard")
    if big:
        (root / "data.bin").write_bytes(os.urandom(big))
    if ignore is not None:
        (root / ".dockerignore").write_text(ignore)
    return root


def walked(root: Path, fold: bool, labels: dict[str, str] = LABELS) -> tuple[bytes, str, dict[str, str]]:
    chunks, name, left = build_context(root, "Dockerfile", labels, None, fold_labels=fold)
    return b"".join(chunks), name, left


def replayed(root: Path, fold: bool, keep: str = "all", labels: dict[str, str] = LABELS) -> tuple[bytes, str, dict[str, str]]:
    snap = snapshot(root, "Dockerfile", [({}, {})], keep=keep)
    try:
        chunks, name, left = build_context(root, "Dockerfile", labels, None, fold_labels=fold, snapshot=snap)
        return b"".join(chunks), name, left
    finally:
        snap.close()


@pytest.mark.parametrize("fold", [False, True], ids=["buildkit", "classic"])
@pytest.mark.parametrize("ignore", [None, "*.log\n", ".dockerignore\nsrc/**/*.log\n", "*.log\n.dockerignore\n"],
                         ids=["none", "borrowed-name", "rewritten", "self-listed"])
def test_the_replayed_tar_is_the_walked_one(tmp_path: Path, fold: bool, ignore: str | None) -> None:
    root = tree(tmp_path / "ctx", ignore)
    assert replayed(root, fold) == walked(root, fold)


def test_a_context_spilled_to_disk_replays_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots, "SPOOL_MEMORY", 64 << 10)
    root = tree(tmp_path / "ctx", ".dockerignore\nsrc/**/*.log\n", big=3 << 20)
    for fold in (False, True):
        assert replayed(root, fold) == walked(root, fold)


def test_concurrent_builds_read_one_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-platform image's builds replay one snapshot at once, each with its own labels."""
    monkeypatch.setattr(snapshots, "SPOOL_MEMORY", 64 << 10)
    root = tree(tmp_path / "ctx", None, big=5 << 20)
    snap = snapshot(root, "Dockerfile", [({}, {})], keep="all")
    labelled = [{"io.imgctl.inputs": f"sha256:{i:064x}"} for i in range(4)]

    def one(labels: dict[str, str]) -> bytes:
        return b"".join(build_context(root, "Dockerfile", labels, None, fold_labels=True, snapshot=snap)[0])

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, labelled))
    snap.close()
    assert got == [walked(root, True, labels)[0] for labels in labelled]


def test_a_dockerfile_the_ignore_file_names_is_walked_again(tmp_path: Path) -> None:
    """The classic builder's folded tar leaves out a Dockerfile that .dockerignore names; the
    plain walk sends it, so that tar is not replayed."""
    root = tree(tmp_path / "ctx", "Dockerfile\n.dockerignore\n")
    data, name, _ = replayed(root, True)
    assert (data, name) == walked(root, True)[:2]
    assert b"\0Dockerfile\0" not in data.replace(b".imgctl.Dockerfile", b"")


def test_digests_are_those_of_separate_walks(tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx", "*.log\n")
    facts = [({"arg:A": "1", "platform": "linux/amd64"}, {"base": "sha256:aa"}),
             ({"arg:A": "1", "platform": "linux/arm64"}, {"base": "sha256:bb"})]
    snap = snapshot(root, "Dockerfile", facts, keep="none")
    assert snap.tar() is None
    assert snap.digests == [inputs_digest(root, "Dockerfile", *f) for f in facts]
    assert snap.digests[0] != snap.digests[1]
    (root / "src" / "main.py").write_text("print('changed')\n")
    assert inputs_digest(root, "Dockerfile", *facts[0]) != snap.digests[0]


def test_keep_memory_drops_a_big_tar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots, "SPOOL_WAITING", 64 << 10)
    small = snapshot(tree(tmp_path / "small"), "Dockerfile", [({}, {})], keep="memory")
    big = snapshot(tree(tmp_path / "big", big=1 << 20), "Dockerfile", [({}, {})], keep="memory")
    assert small.tar() is not None and big.tar() is None
    assert big.digests == [inputs_digest(tmp_path / "big", "Dockerfile", {}, {})]  # hashed all the same


COUNTING = """
import collections, json, sys
import imgctl.tarstream as tarstream
opened = collections.Counter()
real = tarstream.open_file
def counting(root, rel, full):
    opened[full] += 1
    return real(root, rel, full)
tarstream.open_file = counting
from imgctl.cli import main
try:
    main(sys.argv[1:])
finally:
    print("OPENED " + json.dumps(opened), file=sys.stderr)
"""


@pytest.mark.engine
def test_a_release_reads_each_context_file_once(tmp_path: Path, registry: RegistryServer, docker_config: Path,
                                                builder: str) -> None:
    ns = unique()
    config = chain_config(tmp_path, registry.host, ns, {"app": "COPY . /app\n"})
    (tmp_path / "app" / "data.bin").write_bytes(os.urandom(12 << 20))  # past the memory spool: a temp file
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DOCKERHUB_", "IMGCTL_"))}
    env.update(DOCKER_CONFIG=str(docker_config), TMPDIR=str(tmp_path), IMGCTL_BUILDER=builder)
    done = subprocess.run([sys.executable, "-c", COUNTING, "release", "-c", str(config), "--version", "1.0.0",
                           "-o", "plain"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    opened = json.loads(done.stderr.rpartition("OPENED ")[2])
    assert opened[str(tmp_path / "app" / "data.bin")] == 1, opened
    assert set(opened.values()) == {1}, opened  # every file of both contexts: hashed and sent in one read
    # the spool was an unnamed temp file: nothing is left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("imgctl-context-")]
    pulled = subprocess.run(["docker", "run", "--rm", "--network", "none", f"{registry.host}/{ns}/app:1.0.0",
                             "sh", "-c", "wc -c < /app/data.bin"], capture_output=True, text=True, timeout=60)
    assert pulled.stdout.strip() == str(12 << 20), pulled.stderr
