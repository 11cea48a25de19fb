"""One run at a time per config file, with a lock the kernel drops when the holder dies.

flock(2) locks belong to the open file: a crashed or killed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imgctl.errors import LockBusy


def lock_path(config_path: Path) -> Path:
    key = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:16]
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return folder / f"imgctl-{key}.lock"


@contextmanager
def run_lock(config_path: Path, *, timeout: float = 0.0) -> Iterator[Path]:
    path = lock_path(config_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                    raise LockBusy(
                        f"another imgctl run holds the lock for {config_path} (pid {holder})",
                        hint="Wait for it to finish, or pass --lock-timeout SECONDS to wait for it.",
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)
