"""Docker reference grammar and the `{variable}` templates used in tags and build args.

Pure functions only: no I/O, no docker-py.
"""

from __future__ import annotations

import re
import string

# From the distribution reference grammar (distribution/reference/regexp.go).
# ASCII only and \Z, not $: Python's \w takes any Unicode letter, and $ lets a trailing newline through.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
REGISTRY_RE = re.compile(rf"^{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]{{1,5}})?\Z")
MAX_TAG_LENGTH = 128
MAX_REPOSITORY_LENGTH = 255

TEMPLATE_VARIABLES = (
    "version",
    "major",
    "minor",
    "patch",
    "git_sha",
    "git_short_sha",
    "branch",
    "date",
    "registry",
    "namespace",
    "name",
)
# A tag holding one of these names exactly one build: it is immutable.
IMMUTABLE_VARIABLES = frozenset({"version", "git_sha", "git_short_sha", "date"})

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


class TemplateError(ValueError):
    """A template names an unknown variable or is malformed."""


def is_docker_hub(registry: str) -> bool:
    return registry in _HUB_ALIASES


def template_variables(template: str) -> tuple[str, ...]:
    """The variable names a template uses, in order; raises TemplateError if malformed."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"malformed template {template!r}: {exc} (write {{{{ or }}}} for a literal brace)") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field == "":
            raise TemplateError(f"empty {{}} in {template!r}; known variables: {', '.join(TEMPLATE_VARIABLES)}")
        if spec or conversion or not field.isidentifier():
            raise TemplateError(f"unsupported template field {{{field}}} in {template!r}: write a plain {{name}}")
        if field not in TEMPLATE_VARIABLES:
            raise TemplateError(f"unknown variable {{{field}}} in {template!r}; known variables: {', '.join(TEMPLATE_VARIABLES)}")
        names.append(field)
    return tuple(names)


def render(template: str, values: dict[str, str]) -> str:
    """Fill a template; the caller has checked that every variable it uses has a value."""
    return template.format_map(values)


def sanitize_tag_part(value: str) -> str:
    """Make a free-form value (a branch name) usable inside a tag, as docker/metadata-action does."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)
    return cleaned.lstrip(".-")[:MAX_TAG_LENGTH] or "unknown"


def repository_path(registry: str, namespace: str, name: str) -> str:
    """The repository as the registry's HTTP API names it (no host)."""
    path = f"{namespace}/{name}" if namespace else name
    if is_docker_hub(registry) and "/" not in path:
        path = f"library/{path}"
    return path


def full_repository(registry: str, namespace: str, name: str) -> str:
    """The repository as the engine names it: `registry/namespace/name`."""
    path = f"{namespace}/{name}" if namespace else name
    return f"{registry}/{path}"
