"""GitHub Actions' workflow commands (`::group::`, `::error ...::`, `::add-mask::`), written as
@actions/core writes them: the one place that knows their escaping."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TextIO


def on_github_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def escape_data(value: str) -> str:
    """The message of a workflow command: `%`, CR and LF are escaped (as @actions/core does)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """A property value of a workflow command: also `:` and `,`, which would end the value."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def workflow_command(name: str, message: str = "", **properties: str | int | None) -> str:
    """One `::name k=v,k=v::message` line (no newline); properties that are None are left out."""
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def add_masks(secrets: Iterable[str], out: TextIO) -> None:
    """Ask the runner to mask each secret in the rest of the job's log (empty values are skipped)."""
    seen: set[str] = set()
    for secret in secrets:
        if secret and secret not in seen:
            seen.add(secret)
            out.write(workflow_command("add-mask", secret) + "\n")
    out.flush()
