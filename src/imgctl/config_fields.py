"""The value types of config fields: templates, tags, sizes, platforms, registry hosts, names of
variables. Each is checked as it is read, so that an error names the one bad entry (`tags[2]`,
`build_args.BASE`), not the whole list.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from imgctl import refs
from imgctl.platforms import Platform

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _scalar_to_str(value: Any) -> Any:
    # YAML reads `1.10` as the float 1.1 and `yes` as True: refuse the lossy case, spell out the rest.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError("a number with a decimal point loses digits in YAML; write the value in quotes")
    return value


EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, description="The NAME of an environment variable")]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$", re.I)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """`200MB`, `1.5GB`, `512MiB` or a number of bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: write e.g. 200MB, 1.5GB or 512MiB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


# Every section of the config: unknown keys are errors, and a loaded config never changes.
class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Memoized (the check is pure): 1,000 images repeat a handful of templates; a failure is not cached.
@functools.lru_cache(maxsize=1024)
def _check_template(value: str) -> str:
    try:
        refs.template_variables(value)
    except refs.TemplateError as exc:
        raise ValueError(str(exc)) from None
    return value


# Checked item by item, so that an error names the one bad entry (`tags[2]`, `build_args.BASE`).
Template = Annotated[str, BeforeValidator(_scalar_to_str), Field(min_length=1), AfterValidator(_check_template)]


@functools.lru_cache(maxsize=1024)
def _check_tag(value: str) -> str:
    # Render with stand-in values so that literal text no tag can hold is refused now, not mid-release.
    sample = refs.render(value, dict.fromkeys(refs.TEMPLATE_VARIABLES, "x"))
    if not refs.TAG_RE.match(sample):
        raise ValueError(f"{value!r} is not a valid Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    return value


TagText = Annotated[Template, AfterValidator(_check_tag)]


class TagSpec(Model):
    """A tag with its classification forced: `floating: true` waits for the whole release."""

    tag: TagText
    floating: bool


def _tag_kind(value: Any) -> str:
    return "spec" if isinstance(value, (dict, TagSpec)) else "text"


# Chosen by the input's shape, so a bad entry gets the one error that fits it, not one per alternative.
TagEntry = Annotated[Annotated[TagText, Tag("text")] | Annotated[TagSpec, Tag("spec")], Discriminator(_tag_kind)]
TAG_KINDS = ("text", "spec")  # the union's branch names, which pydantic puts in error locations


def check_registry(value: str) -> str:
    if "://" in value or not refs.REGISTRY_RE.match(value):
        raise ValueError(f"{value!r} is not a registry host[:port] (no scheme, no path), e.g. docker.io or 127.0.0.1:5000")
    return value


def check_namespace(value: str) -> str:
    if value and not refs.REPOSITORY_RE.match(value):
        raise ValueError(f"{value!r} is not a valid namespace: lowercase letters, digits and . _ - separators, / between parts")
    return value


def _platforms(value: Any) -> Any:
    """Each entry checked against the os/arch[/variant] grammar; kept as written, in order."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value  # pydantic says what it expected
    for entry in value:
        if isinstance(entry, str):
            Platform.parse(entry)  # a PlatformError is a ValueError: pydantic names the field
    return value


Platforms = Annotated[list[str], BeforeValidator(_platforms), Field(min_length=1, max_length=32)]
