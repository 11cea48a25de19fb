"""The collector held off during the program's start-up, and given back once its work begins."""

from __future__ import annotations

import gc
import subprocess
import sys

from imgctl import startup


def test_hold_then_done_gives_the_collector_back() -> None:
    assert gc.isenabled()
    try:
        startup.hold()
        assert not gc.isenabled()
        startup.done()
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_done_without_hold_leaves_a_disabled_collector_alone() -> None:
    gc.disable()
    try:
        startup.done()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_library_caller_of_main_keeps_its_collector(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import gc, sys\n"
        "from imgctl.cli import main\n"
        "try:\n    main(['--imgctl-version'])\nexcept SystemExit:\n    pass\n"
        "sys.exit(0 if gc.isenabled() else 3)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0


def test_the_program_holds_the_collector_from_its_first_import(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = "import gc, sys\nimport imgctl.entry\nsys.exit(3 if gc.isenabled() else 0)\n"
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0
