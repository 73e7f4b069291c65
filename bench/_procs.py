"""Memory of a process tree, read from /proc (Linux).

Chromium is many processes sharing much of their memory, so adding up RSS
counts shared pages once per process. PSS (proportional set size) divides
each shared page among its sharers: the sum is the tree's real footprint.
"""

from __future__ import annotations

from pathlib import Path


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree_pss_bytes(root: int) -> int:
    """Sum of PSS over ``root`` and all its descendants (Chromium's helpers too)."""
    total = 0
    stack = [root]
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
        stack += _children(pid)
    return total
