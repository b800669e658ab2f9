"""
How the load was spread over the workers: each server process writes its
running totals to the counts directory (C{worker-PID.json}); the harness
reads them before and after a phase and keeps the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

#: How long the servers take to write fresh totals (they do every 0.2 s).
SETTLE_SECONDS = 0.5


def readCounts(directory: Path, what: str = "connections", byPid: bool = False) -> dict[str, int]:
    """
    Totals of C{what} (C{connections} or C{requests}) by worker id, summed
    over every process that reported under that id (or by process id).
    """
    totals: dict[str, int] = {}
    for path in sorted(directory.glob("worker-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        worker = str(record["pid" if byPid else "worker"])
        totals[worker] = totals.get(worker, 0) + int(record.get(what, 0))
    return totals


def difference(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """
    What each worker served between two readings, by worker id in order.
    """
    workers = sorted(set(before) | set(after), key=_workerOrder)
    return {w: after.get(w, 0) - before.get(w, 0) for w in workers}


def _workerOrder(worker: str) -> tuple[int, str]:
    return (int(worker), worker) if worker.isdigit() else (1 << 30, worker)


def shares(counts: dict[str, int]) -> list[float]:
    """
    Each worker's share of the total, in percent, in worker order.
    """
    total = sum(counts.values())
    if total <= 0:
        return []
    return [100 * n / total for n in counts.values()]


def formatSpread(counts: dict[str, int]) -> str:
    """
    The shares as one short cell: C{51/49}, C{26/25/24/25}; C{-} for none.
    """
    values = shares(counts)
    if not values:
        return "-"
    return "/".join(f"{v:.0f}" for v in values)
