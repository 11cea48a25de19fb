"""Read a YAML file strictly: UTF-8 only, no duplicate keys, bounded size, with node positions kept."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from imgctl.errors import ConfigError

MAX_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000
# Far beyond any real config; PyYAML's scanner slows down quadratically on deep flow nesting long before
# Python's recursion limit stops it, so stop early.
MAX_DEPTH = 64


# libyaml's parser when present: PyYAML's pure-Python scanner takes ~0.3 s on a 200-image config.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """A safe loader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # `? [a]` or `? {a: 1}`: the lookup below would raise TypeError
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
                )
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first defined on line {first})", key_node.start_mark
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse `path`; return the data and its node tree (for line numbers of later errors)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: config file is {len(raw)} bytes; the limit is {MAX_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    if not text.strip():
        raise ConfigError(f"{path}: config file is empty", hint="See `imgctl schema` or the README for the format.")
    loader = _StrictLoader(text)
    try:
        _check_depth(text)
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}: config file holds no document")
        _check_size(node, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML is nested too deeply") from None
    finally:
        loader.dispose()
    return data, node


def _check_depth(text: str) -> None:
    """Refuse deep nesting from the event stream, before any recursive composing can start."""
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _check_size(root: yaml.Node, path: Path) -> None:
    """Refuse alias bombs: count nodes as a reader would see them, aliases expanded."""
    count = 0
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(f"{path}: YAML expands to more than {MAX_NODES} nodes (anchors and aliases included)")
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def mark_of(root: yaml.Node | None, loc: tuple[int | str, ...], *, key: bool = False) -> tuple[int, int] | None:
    """Line and column (1-based) of the node at `loc`; of the key itself when `key`."""
    node = root
    found: tuple[int, int] | None = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    found = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                    node = value_node
                    break
            else:
                return found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            break
        if not key or isinstance(part, int):  # a list item has no key: point at the item
            found = (node.start_mark.line + 1, node.start_mark.column + 1)
    return found
