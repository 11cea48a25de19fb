"""The garbage collector during start-up. The imports of a command make several hundred thousand
objects and no garbage, and the collector walks them again and again as they come (about 12 ms
of a promote's 0.2 s start-up here). The program holds it off from its first line until the
command's own work begins, then hides what the imports made from it and lets it run."""

from __future__ import annotations

import gc

_held = False


def hold() -> None:
    """Called by the program itself (entry.py, before its first import), never by a library caller."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def done() -> None:
    """The work begins (a release's or a promotion's, after its imports): collect as usual.
    Commands that never call this are short, and end with the collector held."""
    global _held
    if _held:
        _held = False
        gc.freeze()
        gc.enable()
