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


# -- the program's end: every exit handler, the streams flushed, the status kept ------------------

END = (
    "import atexit, sys\n"
    "import imgctl.entry\n"
    "marker = sys.argv[1]\n"
    "atexit.register(lambda: open(marker, 'w').write('ran'))\n"  # registered after entry's own
    "sys.argv = ['imgctl', *sys.argv[2:]]\n"
    "imgctl.entry.main()\n"
)


def test_the_program_ends_after_every_exit_handler_with_its_status(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "handler"
    done = subprocess.run([sys.executable, "-c", END, str(marker), "-V"], capture_output=True, text=True, cwd=tmp_path)
    assert (done.returncode, done.stdout, marker.read_text()) == (0, "imgctl 0.1.0\n", "ran")
    marker.unlink()
    done = subprocess.run([sys.executable, "-c", END, str(marker), "validate", "-c", "missing.yaml"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "config file not found" in done.stderr
    assert marker.read_text() == "ran"


def test_the_program_flushes_a_long_output_into_a_pipe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    done = subprocess.run([sys.executable, "-m", "imgctl", "schema", "--events"], capture_output=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) > 8192  # past one buffer: all of it written at the end
    assert "oneOf" in json.loads(done.stdout)
