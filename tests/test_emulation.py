"""Foreign architectures for real: qemu's user-mode emulation as scripts/setup.sh registers it
(scripts/binfmt.sh, with the fix-binary F flag), and linux/arm64 images built FROM scratch whose
RUN steps execute under it. A missing registration fails these tests: it never skips them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.support.arch import BINFMT, UNAME_M, binfmt_entry, emulation_problem, require_emulation, write_multiarch_base_context

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parent.parent
BINFMT_SH = REPO / "scripts" / "binfmt.sh"
SUDO = [] if os.geteuid() == 0 else ["sudo"]


def binfmt_sh(*archs: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", str(BINFMT_SH), *archs], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def write_binfmt(path: Path, text: str) -> None:
    subprocess.run([*SUDO, "tee", str(path)], input=text, capture_output=True, text=True, timeout=30, check=True)


def register_line(name: str, entry: dict[str, str]) -> str:
    """The `register` line that recreates `entry` as binfmt_entry() read it."""
    escape = lambda hexes: "".join(f"\\x{hexes[i:i + 2]}" for i in range(0, len(hexes), 2))  # noqa: E731
    flags = entry.get("flags", "").strip()
    return f":{name}:M:{entry['offset']}:{escape(entry['magic'])}:{escape(entry['mask'])}:{entry['interpreter']}:{flags}\n"


@pytest.fixture
def image_tags() -> Iterator[list[str]]:
    tags: list[str] = []
    yield tags
    if tags:
        subprocess.run(["docker", "rmi", "-f", *tags], capture_output=True, timeout=60)


def test_arm64_and_arm_are_registered_with_fix_binary() -> None:
    require_emulation("qemu-aarch64")
    require_emulation("qemu-arm")
    entry = binfmt_entry("qemu-aarch64")
    assert entry is not None and "F" in entry["flags"], entry


@pytest.mark.parametrize("arch", ["arm64", "amd64"])
def test_classic_build_of_the_multiarch_base_runs_under_emulation(tmp_path: Path, arch: str, image_tags: list[str]) -> None:
    require_emulation()
    context = write_multiarch_base_context(tmp_path / "base")
    tag = f"imgctl-test-emulation:{unique()}-{arch}"
    image_tags.append(tag)
    # --no-cache: dockerd 20.10's classic builder finds cached steps whatever their platform, and
    # would hand the other architecture's image back from an earlier build of the same context
    done = subprocess.run(
        ["docker", "build", "--no-cache", "--platform", f"linux/{arch}", "--build-arg", f"TARGETARCH={arch}", "-t", tag, str(context)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RUN uname -m > /arch" in done.stdout
    inspected = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", tag], capture_output=True, text=True, timeout=60
    )
    assert inspected.stdout.strip() == f"linux/{arch}", inspected.stdout + inspected.stderr
    ran = subprocess.run(
        ["docker", "run", "--rm", "--pull=never", "--network=none", "--platform", f"linux/{arch}", tag, "cat", "/arch"],
        capture_output=True, text=True, timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip() == UNAME_M[arch]


def test_registering_again_changes_nothing() -> None:
    require_emulation()
    binfmt_sh()  # whatever the machine had: registered now
    before = {name: ((BINFMT / name).stat().st_ino, (BINFMT / name).read_text()) for name in ("qemu-aarch64", "qemu-arm")}
    again = binfmt_sh()
    after = {name: ((BINFMT / name).stat().st_ino, (BINFMT / name).read_text()) for name in ("qemu-aarch64", "qemu-arm")}
    assert again.stdout == "" and again.stderr == ""
    assert after == before  # a re-registration would be a new inode


def test_an_entry_without_fix_binary_is_registered_again_with_it() -> None:
    """As Debian's or systemd's own registration may leave it. On riscv64, which nothing here
    builds for, so the aarch64 entry other tests rely on is never missing for a moment."""
    name = "qemu-riscv64"
    kept = binfmt_entry(name)
    try:
        if kept is not None:
            write_binfmt(BINFMT / name, "-1\n")
        magic = Path(f"/usr/share/binfmts/{name}").read_text()
        fields = dict(line.split(" ", 1) for line in magic.splitlines() if " " in line)
        write_binfmt(BINFMT / "register",
                     f":{name}:M::{fields['magic']}:{fields['mask']}:/usr/bin/qemu-riscv64-static:P\n")
        assert "F" not in binfmt_entry(name)["flags"]  # type: ignore[index]
        done = binfmt_sh("riscv64")
        assert done.stdout == f"binfmt: registered {name} (/usr/bin/qemu-riscv64-static, flags F P C)\n"
        assert emulation_problem(name) is None
        assert binfmt_entry(name)["interpreter"] == "/usr/bin/qemu-riscv64-static"  # type: ignore[index]
        assert binfmt_sh("riscv64").stdout == ""
    finally:
        if binfmt_entry(name) is not None:
            write_binfmt(BINFMT / name, "-1\n")
        if kept is not None:
            write_binfmt(BINFMT / "register", register_line(name, kept))
    assert binfmt_entry(name) == kept
