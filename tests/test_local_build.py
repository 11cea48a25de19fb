"""Reuse.local_build, the rule alone: which local image a cached re-release may keep as its build.
(The engine test is tests/test_skip_unchanged.py::test_a_cached_re_release_keeps_the_local_images;
this stands in for the engine's inspect only.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from imgctl.events import BuildDone
from imgctl.reuse import INPUTS_LABEL, Reuse

ID = "sha256:" + "a" * 64
LOCAL = {"Id": ID, "Config": {"Labels": {"team": "core", INPUTS_LABEL: "sha256:in", "from.base": "kept"}}}


def reuse(details: dict[str, Any], emitted: list[Any]) -> Reuse:
    found = Reuse.__new__(Reuse)  # only the engine and emit are used
    found.engine = SimpleNamespace(inspect=lambda reference: details)  # type: ignore[assignment]
    found.emit = emitted.append
    return found


def image(**changes: Any) -> Any:
    return SimpleNamespace(**{"name": "app", "tags": [SimpleNamespace(reference="reg/ns/app:1.0.0")],
                              "labels": {"team": "core"}, "inline_cache": False, **changes})


def test_the_local_image_with_every_label_and_the_inputs_is_kept() -> None:
    emitted: list[Any] = []
    assert reuse(LOCAL, emitted).local_build(image(), "sha256:in") == ID  # a base's own labels may be there too
    assert [e.image_id for e in emitted if isinstance(e, BuildDone)] == [ID]


@pytest.mark.parametrize("details, inputs, changes", [
    (LOCAL, "sha256:other", {}),  # other inputs
    (LOCAL, "sha256:in", {"labels": {"team": "web"}}),  # another label value
    (LOCAL, "sha256:in", {"labels": {"team": "core", "created": "2026-12-02"}}),  # a label it lacks
    (LOCAL, "sha256:in", {"inline_cache": True}),  # BuildKit's cache metadata is in neither
    ({}, "sha256:in", {}),  # no local image
    (LOCAL, "sha256:in", {"tags": []}),
], ids=["inputs", "label-value", "label-missing", "inline-cache", "absent", "no-tags"])
def test_anything_else_builds(details: dict[str, Any], inputs: str, changes: dict[str, Any]) -> None:
    emitted: list[Any] = []
    assert reuse(details, emitted).local_build(image(**changes), inputs) is None
    assert emitted == []
