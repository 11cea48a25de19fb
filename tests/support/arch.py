"""Foreign architectures for tests: a static arm64 busybox, a base context for linux/amd64 and
linux/arm64, and the check that qemu's user-mode emulation is registered the way builds need it.

scripts/setup.sh (which scripts/test.sh runs first) installs Debian's qemu-user-static, registers
qemu-aarch64 and qemu-arm in binfmt_misc with the fix-binary (F) flag (scripts/binfmt.sh), and
fetches the arm64 busybox into ARM64_BUSYBOX. Nothing here reaches any network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

AMD64_BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static, the machine's own architecture
ARM64_BUSYBOX = Path("/var/cache/imgctl/busybox-arm64/bin/busybox")  # busybox-static:arm64
BINFMT = Path("/proc/sys/fs/binfmt_misc")
SETUP = "bash scripts/setup.sh"

# Works for linux/amd64 and linux/arm64, with the classic builder and with BuildKit, when the
# build arg TARGETARCH (amd64 / arm64) is passed (BuildKit also sets it itself; the classic builder
# does not: without it the COPY names `busybox-`, which fails loudly). The first step is a COPY
# because the classic builder (dockerd 20.10) commits a metadata-only step (ARG, ENV, LABEL) right
# after FROM scratch as an image of the daemon's own platform, and the next step of a foreign
# platform then fails: 'image with reference sha256:... was found but does not match the specified
# platform: wanted linux/arm64, actual: linux/amd64'.
MULTIARCH_BASE_DOCKERFILE = """\
FROM scratch
COPY base.txt /etc/base.txt
ARG TARGETARCH
COPY busybox-${TARGETARCH} /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN uname -m > /arch
CMD ["sh"]
"""
BASE_TXT = "imgctl test base: a static busybox FROM scratch, one per TARGETARCH\n"

# What `uname -m` prints (the content of /arch) in an image of each TARGETARCH
UNAME_M = {"amd64": "x86_64", "arm64": "aarch64"}


def write_multiarch_base_context(folder: Path, extra: str = "") -> Path:
    """A FROM-scratch context holding busybox-amd64, busybox-arm64 and base.txt; the Dockerfile
    copies the busybox of the build arg TARGETARCH and records `uname -m` in /arch. `extra` is appended to the
    Dockerfile. Returns `folder`."""
    if not ARM64_BUSYBOX.is_file():
        pytest.fail(f"{ARM64_BUSYBOX} is missing: run `{SETUP}` (it fetches busybox-static:arm64)", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(AMD64_BUSYBOX, folder / "busybox-amd64")
    shutil.copy(ARM64_BUSYBOX, folder / "busybox-arm64")
    (folder / "base.txt").write_text(BASE_TXT)
    (folder / "Dockerfile").write_text(MULTIARCH_BASE_DOCKERFILE + extra)
    return folder


def binfmt_entry(name: str = "qemu-aarch64") -> dict[str, str] | None:
    """The binfmt_misc entry `name` as a dict ("enabled" -> "enabled"/"disabled", "interpreter",
    "flags", "offset", "magic", "mask"), or None if there is none (or binfmt_misc is not mounted)."""
    path = BINFMT / name
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    entry: dict[str, str] = {}
    for line in lines:
        if line in ("enabled", "disabled"):
            entry["enabled"] = line
        else:
            key, _, value = line.partition(" ")
            entry[key.rstrip(":")] = value
    return entry


def emulation_problem(name: str = "qemu-aarch64") -> str | None:
    """Why binaries of `name`'s architecture cannot run in FROM-scratch containers, or None."""
    if not (BINFMT / "register").exists():
        return f"binfmt_misc is not mounted at {BINFMT}"
    entry = binfmt_entry(name)
    if entry is None:
        return f"no binfmt_misc entry {name} (qemu-user-static not registered)"
    if entry.get("enabled") != "enabled":
        return f"the binfmt_misc entry {name} is disabled"
    if "F" not in entry.get("flags", ""):
        return (f"the binfmt_misc entry {name} lacks the fix-binary (F) flag (flags: {entry.get('flags', '')!r}): "
                f"{entry.get('interpreter')} is not inside FROM-scratch containers")
    return None


def require_emulation(name: str = "qemu-aarch64") -> None:
    """Fail (never skip) the calling test unless `name` (default: arm64's) is registered with F."""
    problem = emulation_problem(name)
    if problem is not None:
        pytest.fail(f"foreign-architecture emulation is missing: {problem}; run `{SETUP}` "
                    "(it installs qemu-user-static and runs scripts/binfmt.sh)", pytrace=False)
    if name == "qemu-aarch64" and not ARM64_BUSYBOX.is_file():
        pytest.fail(f"{ARM64_BUSYBOX} is missing: run `{SETUP}`", pytrace=False)
