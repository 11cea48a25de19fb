"""The `imgctl` program's entry point: the console script and `python -m imgctl`. The garbage
collector is held off before the first import (typer's among them), and the program ends without
tearing the interpreter down; a library caller of imgctl.cli.main meets neither (startup.py)."""

import atexit
import os
import sys

from imgctl import startup

startup.hold()

_code: "int | None" = None  # the program's exit status, once main() has one


def _end() -> None:
    """The last exit handler (registered first, and they run last first): every other one has run
    and every thread has been joined by now; the standard streams are flushed here. What is left
    of a normal exit is the teardown of every module and object, 8-13 ms after a promote here,
    which frees memory the system takes back anyway and runs no cleanup that Python promises
    (it does not promise __del__ for objects alive at exit)."""
    if _code is None:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed pipe, say: the interpreter's own exit reports it
        return
    os._exit(_code)


atexit.register(_end)

from imgctl.cli import main as _main  # noqa: E402


def main() -> None:
    global _code
    try:
        _main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            _code = exc.code or 0
        raise
    _code = 0


__all__ = ["main"]
