"""What is wrong with a config, as the user is told it: keys that would hold a secret, pydantic's
errors in the config's own terms, the checks across fields (names, registries, dependencies,
folders), and every problem with its line and column.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from imgctl import refs
from imgctl.config_fields import TAG_KINDS
from imgctl.graph import find_cycle
from imgctl.yamlload import Positions

if TYPE_CHECKING:
    from imgctl.config import Config

SECRET_KEYS = frozenset(
    {"password", "passwd", "pass", "token", "secret", "api_key", "apikey", "access_token", "auth_token",
     "identitytoken", "credentials", "auth_config"}
)

Problem = tuple[tuple[int | str, ...], str, bool]  # (location, message, points at the key itself)


def secret_keys(data: dict[str, Any]) -> list[Problem]:
    def walk(value: dict[Any, Any] | list[Any], loc: tuple[int | str, ...], found: list[Problem]) -> None:
        if isinstance(value, dict):
            if loc and loc[-1] in ("build_args", "labels"):
                return  # build args are checked when planning; labels hold no credentials by design
            if loc and loc[-1] == "secrets":  # keys are the secrets' ids; each names where its value is
                for key, item in value.items():
                    if isinstance(item, dict):
                        walk(item, loc + (key,), found)
                return
            for key, item in value.items():
                if isinstance(key, str) and key.lower() in SECRET_KEYS:
                    found.append(
                        (loc + (key,), "secrets never go in the config file: remove this key and put the NAME of an "
                         "environment variable in auth.password_env (and auth.username_env) instead", True)
                    )
                elif isinstance(item, (dict, list)):  # a scalar holds no key
                    walk(item, loc + (key,), found)
        else:
            for index, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    walk(item, loc + (index,), found)

    found: list[Problem] = []
    walk(data, (), found)
    return found


def pydantic_problems(exc: ValidationError, models: Mapping[str, type[BaseModel]]) -> list[Problem]:
    """pydantic's errors as the user wrote the config; `models`: the model of the section under each key."""
    problems: list[Problem] = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = _clean_loc(error["loc"])
        kind = error["type"]
        if kind == "invalid_key" and loc:
            loc = loc[:-1] + (str(loc[-1]),)  # a key that is not a string, e.g. `1:`
        if kind == "extra_forbidden":
            problems.append((loc, _unknown_key_message(loc, models), True))
        elif kind == "missing":
            problems.append((loc, "required key is missing", True))
        else:
            message = error["msg"].removeprefix("Value error, ")
            if kind == "string_pattern_mismatch" and loc and str(loc[-1]).endswith("_env"):
                message = "must be the NAME of an environment variable (letters, digits, _), not its value"
            problems.append((loc, message, kind == "invalid_key"))
    return _dedupe(problems)


def _clean_loc(raw: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The location as the user wrote it: without pydantic's union branch names and `[key]` markers."""
    loc: list[int | str] = []
    for part in raw:
        if part == "[key]" and loc:
            loc[-1] = str(loc[-1])  # the bad key itself; as text, mark_of finds its line
        elif part in TAG_KINDS and len(loc) >= 2 and loc[-2] in ("tags", "nightly_tags") and isinstance(loc[-1], int):
            continue
        else:
            loc.append(part)
    return tuple(loc)


def _unknown_key_message(loc: tuple[int | str, ...], models: Mapping[str, type[BaseModel]]) -> str:
    key = str(loc[-1])
    strings = [str(p) for p in loc[:-1] if isinstance(p, str)]
    if len(strings) >= 2 and strings[-2] == "secrets":  # images[0].secrets.ID.KEY
        if key in ("value", "text", "data"):
            return f"unknown key {key!r}: a secret's value never goes in the config; give {{env: VAR}} or {{file: PATH}}"
        parent = "secrets"
    else:
        parent = strings[-1] if strings else ""
    model = models.get(parent, models[""])
    known = list(model.model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    suggestion = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {key!r}{suggestion}"


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[tuple[int | str, ...], str]] = set()
    result = []
    for loc, message, key in problems:
        if (loc, message) not in seen:
            seen.add((loc, message))
            result.append((loc, message, key))
    return result


def semantic_problems(config: Config, base_dir: Path, data: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    if config.registries and any(k in data for k in ("registry", "namespace", "auth")):
        problems.append((("registries",), "use either `registries:` or `registry`/`namespace`/`auth`, not both", True))
    targets = config.targets()
    keys = [t.key for t in targets]
    for index, key in enumerate(keys):
        if keys.index(key) != index:
            problems.append((("registries", index, "name"), f"duplicate registry name {key!r}", False))
    for target_index, target in enumerate(targets):
        if refs.is_docker_hub(target.url) and not target.namespace:
            loc: tuple[int | str, ...] = ("registries", target_index) if config.registries else ("registry",)
            problems.append((loc, "Docker Hub needs a `namespace` (your user or organisation)", False))
    names = [image.name for image in config.images]
    first_index: dict[str, int] = {}
    for index, name in enumerate(names):
        first_index.setdefault(name, index)
    folders: dict[tuple[str, str], tuple[str, str] | None] = {}  # (context, dockerfile): what is wrong, if anything
    for index, image in enumerate(config.images):
        where: tuple[int | str, ...] = ("images", index)
        if first_index[image.name] != index:
            problems.append((where + ("name",), f"duplicate image name {image.name!r}", False))
        for dep_index, dep in enumerate(image.depends_on):
            if dep not in first_index:
                problems.append((where + ("depends_on", dep_index), f"unknown image {dep!r}; images: {', '.join(dict.fromkeys(names))}", False))
            elif dep == image.name:
                problems.append((where + ("depends_on", dep_index), "an image cannot depend on itself", False))
        for reg_index, reg in enumerate(image.registries or []):
            if reg not in keys:
                problems.append((where + ("registries", reg_index), f"unknown registry {reg!r}; registries: {', '.join(keys)}", False))
        # Looked at once per folder and file: a thousand images often share one context.
        if (image.context, image.dockerfile) not in folders:
            folders[image.context, image.dockerfile] = _context_problem(base_dir, image.context, image.dockerfile)
        found = folders[image.context, image.dockerfile]
        if found:
            problems.append((where + (found[0],), found[1], False))
    # Self-dependencies are reported above; left in, each would also show up as a cycle `a -> a`.
    cycle = find_cycle({image.name: [d for d in image.depends_on if d != image.name] for image in config.images})
    if cycle:
        index = first_index[cycle[0]]
        problems.append((("images", index, "depends_on"), f"dependency cycle: {' -> '.join(cycle)}", True))
    return problems


def _context_problem(base_dir: Path, context_name: str, dockerfile_name: str) -> tuple[str, str] | None:
    """(field, message) if the context folder or its Dockerfile is not there."""
    context = base_dir / context_name
    if not context.exists():
        return "context", f"context folder {context_name!r} does not exist (relative to {base_dir})"
    if not context.is_dir():
        return "context", f"context {context_name!r} is a file; it must be a folder"
    if not (context / dockerfile_name).is_file():
        return "dockerfile", f"Dockerfile {dockerfile_name!r} not found in context {context_name!r}"
    return None


def format_problems(path: Path, positions: Positions, problems: list[Problem]) -> str:
    lines = [f"{path}: invalid config ({len(problems)} problem{'s' if len(problems) != 1 else ''})"]
    for loc, message, key in problems:
        mark = positions.mark(loc, key=key)
        where = f"{path.name}:{mark[0]}:{mark[1]}: " if mark else ""
        lines.append(f"  {where}{format_loc(loc) or '(top level)'}: {message}")
    return "\n".join(lines)


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
