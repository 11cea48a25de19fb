"""Dependency graphs of images, as {name: [the names it depends on]}: cycles, a selection with its
dependencies, the order to build in, the parts that can be released apart. Pure; the config's
checks, the planner and the plan's scheduling all walk them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in `graph` as a path that ends where it starts, or None.

    A depth-first walk with its own stack, not recursion: a config that lists a chain of a few
    thousand images dependents first must not hit Python's recursion limit.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in state:
            continue
        state[root] = 1
        path, pending = [root], [iter(graph[root])]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:  # every dependency of the path's last node is done
                state[path.pop()] = 2
                pending.pop()
            elif state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            elif dep in graph and dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(graph[dep]))
    return None


def with_dependencies(graph: Mapping[str, Sequence[str]], chosen: Iterable[str]) -> set[str]:
    """`chosen` and every image they depend on, directly or not."""
    found = set(chosen)
    stack = list(found)
    while stack:
        for dep in graph[stack.pop()]:
            if dep not in found:
                found.add(dep)
                stack.append(dep)
    return found


def topological(graph: Mapping[str, Sequence[str]], config_order: list[str], selected: set[str]) -> list[str]:
    """The `selected` images, dependencies first; otherwise the order of the config file.

    Each step takes the first image in config order whose dependencies are all placed: Kahn's
    algorithm with the ready images in a heap by config position, O(n log n). (It was the same
    rule as a scan of the remaining images from the start after each step: O(n²).)
    """
    position = {name: i for i, name in enumerate(config_order) if name in selected}
    waiting = {name: 0 for name in position}  # dependencies not yet placed
    dependents: dict[str, list[str]] = {name: [] for name in position}
    for name in position:
        for dep in dict.fromkeys(graph[name]):
            if dep in position:
                waiting[name] += 1
                dependents[dep].append(name)
    ready = [position[name] for name in position if not waiting[name]]
    heapq.heapify(ready)
    done: list[str] = []
    while ready:
        name = config_order[heapq.heappop(ready)]
        done.append(name)
        for child in dependents[name]:
            waiting[child] -= 1
            if not waiting[child]:
                heapq.heappush(ready, position[child])
    return done


# The rest read a planned graph: every dependency is in it, listed before the images that need it.


def groups(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Images that can be released apart: the connected parts of the dependency graph."""
    parent = {name: name for name in graph}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for name, deps in graph.items():
        for dep in deps:
            parent[root(name)] = root(dep)
    out: dict[str, list[str]] = {}
    for name in graph:
        out.setdefault(root(name), []).append(name)
    return list(out.values())


def build_order(graph: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """The rank of each image (0 first) for when more are ready to build than there are slots.

    The longest chain of images still to build after it goes first: that chain bounds when the
    release can end. Then the one with more images waiting on it, then the graph's order.
    """
    children: dict[str, list[str]] = {name: [] for name in graph}
    for name, deps in graph.items():
        for dep in deps:
            children[dep].append(name)
    height: dict[str, int] = {}
    below: dict[str, set[str]] = {}
    for name in reversed(list(graph)):  # dependencies come first
        kids = children[name]
        height[name] = 1 + max((height[k] for k in kids), default=-1)
        below[name] = set(kids).union(*(below[k] for k in kids))
    position = {name: i for i, name in enumerate(graph)}
    ranked = sorted(position, key=lambda name: (-height[name], -len(below[name]), position[name]))
    return {name: rank for rank, name in enumerate(ranked)}


def levels(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Images grouped by depth in the dependency graph: each level needs only earlier ones."""
    depth: dict[str, int] = {}
    for name, deps in graph.items():
        depth[name] = 1 + max((depth[d] for d in deps if d in depth), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in graph:
        out[depth[name]].append(name)
    return out
