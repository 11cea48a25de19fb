"""Read a YAML file strictly: UTF-8 only, no duplicate keys, bounded size, with node positions on demand."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
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


@dataclass
class Positions:
    """Where each value of a document was written, for the messages of errors found after reading.

    The node tree that knows it (PyYAML's, with two marks per node) is composed again only when an
    error asks for a line: a valid config never pays for it, in time or memory.
    """

    text: str
    _root: yaml.Node | None = field(default=None, repr=False)

    def mark(self, loc: tuple[int | str, ...], *, key: bool = False) -> tuple[int, int] | None:
        """Line and column (1-based) of the value at `loc`; of its key when `key`."""
        if self._root is None:
            loader = _StrictLoader(self.text)
            try:
                self._root = loader.get_single_node()
            finally:
                loader.dispose()
        return mark_of(self._root, loc, key=key)


def read_yaml(path: Path) -> tuple[Any, Positions]:
    """Parse `path`; return the data and where its values are (for line numbers of later errors)."""
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
    try:
        return _read_plain(text), Positions(text)
    except Exception:  # anything the quick reader does not take, the strict one reads, or reports, as it always did
        data, root = _read_strict(text, path)
        return data, Positions(text, root)


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_PLAIN_SCALARS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("bool", "float", "int", "null", "timestamp", "binary"))
_NOTHING: Any = object()


class _Unusual(Exception):
    """Something the quick reader leaves to the strict one: an error, a limit, a rare construct."""


def _read_plain(text: str) -> Any:
    """The data of a plain document, built straight from libyaml's events, with no node tree.

    Plain: one document of mappings, sequences and the standard scalars, at most MAX_DEPTH deep
    and MAX_NODES with aliases expanded, keys unique and hashable; anything else raises, and
    `_read_strict` (the spec) decides. Reading a 1,000-image config took 0.2 s through the node
    tree (an event pass for the depth, composing, constructing) and takes 0.05 s here.
    """
    loader = _BaseLoader(text)
    try:
        return _build(loader)
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader) -> Any:
    get = loader.get_event
    resolve = loader.resolve
    constructors = loader.yaml_constructors
    # Local names: this loop runs once per event, 17,000 times for 1,000 images.
    scalar_event, alias_event, document_end = yaml.ScalarEvent, yaml.AliasEvent, yaml.DocumentEndEvent
    sequence_start, mapping_start = yaml.SequenceStartEvent, yaml.MappingStartEvent
    sequence_end, mapping_end = yaml.SequenceEndEvent, yaml.MappingEndEvent
    scalars: dict[tuple[Any, ...], Any] = {}  # the same text, tag and style read alike: read it once
    anchors: dict[str, tuple[Any, int | None]] = {}  # value and size with aliases expanded (None while open)
    if type(get()) is not yaml.StreamStartEvent or type(get()) is not yaml.DocumentStartEvent:
        raise _Unusual
    stack: list[list[Any]] = []  # [container, key waiting for its value, anchor, node count at its start]
    count = 0  # nodes so far, aliases expanded, as _check_size counts them
    root = _NOTHING
    while True:
        event = get()
        kind = type(event)
        if kind is scalar_event:
            ident = (event.value, event.implicit, event.tag)
            value = scalars.get(ident, _NOTHING)
            if value is _NOTHING:
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(yaml.ScalarNode, event.value, event.implicit)
                if tag == _STR:
                    value = event.value
                elif tag in _PLAIN_SCALARS:
                    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
                    value = constructors[tag](loader, node)
                else:
                    raise _Unusual
                scalars[ident] = value
            count += 1
            if event.anchor is not None:
                if event.anchor in anchors:
                    raise _Unusual
                anchors[event.anchor] = (value, 1)
        elif kind is sequence_end or kind is mapping_end:
            value, _key, anchor, start = stack.pop()
            if anchor is not None:
                anchors[anchor] = (value, count - start)
        elif kind is sequence_start or kind is mapping_start:
            is_seq = kind is sequence_start
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolve(yaml.SequenceNode if is_seq else yaml.MappingNode, None, event.implicit)
            if tag != (_SEQ if is_seq else _MAP) or len(stack) >= MAX_DEPTH:
                raise _Unusual
            container: Any = [] if is_seq else {}
            if event.anchor is not None:
                if event.anchor in anchors:
                    raise _Unusual
                anchors[event.anchor] = (container, None)
            stack.append([container, _NOTHING, event.anchor, count])
            count += 1
            continue
        elif kind is alias_event:
            value, size = anchors.get(event.anchor, (None, None))
            if size is None:  # undefined, or an alias inside its own anchor
                raise _Unusual
            count += size
        elif kind is document_end:
            break
        else:
            raise _Unusual
        if count > MAX_NODES:
            raise _Unusual
        if not stack:
            root = value
            continue
        frame = stack[-1]
        parent = frame[0]
        if type(parent) is list:
            parent.append(value)
        elif frame[1] is _NOTHING:
            if not isinstance(value, Hashable) or value in parent:
                raise _Unusual
            frame[1] = value
        else:
            parent[frame[1]] = value
            frame[1] = _NOTHING
    if root is _NOTHING or type(get()) is not yaml.StreamEndEvent:
        raise _Unusual
    return root


def _read_strict(text: str, path: Path) -> tuple[Any, yaml.Node]:
    """Every check, through PyYAML's node tree: raises ConfigError with the line and column of the problem."""
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
