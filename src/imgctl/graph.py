"""Dependency graphs of images, as {name: [the names it depends on]}. Pure; the config's checks
and the planner both walk them.
"""

from __future__ import annotations


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
