"""
The results as a PNG chart (matplotlib, the C{bench} extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._configs import NODE, PLAIN_PROCESSES, SINGLE, TWISTCLUSTER
from ._run import ConfigResult

COLOURS = {TWISTCLUSTER: "#3b6ea5", NODE: "#5a9e4b", SINGLE: "#c0504d", PLAIN_PROCESSES: "#d99694"}


def _bars(axes: Any, results: Sequence[ConfigResult], values: list[float], title: str) -> None:
    axes.bar(range(len(results)), values, color=[COLOURS[r.config.kind] for r in results])
    axes.set_xticks(range(len(results)))
    axes.set_xticklabels([r.name for r in results], rotation=60, ha="right", fontsize=7)
    axes.set_title(title, fontsize=10)
    axes.grid(axis="y", alpha=0.3)


def speedUps(results: Sequence[ConfigResult]) -> dict[str, list[tuple[int, float]]]:
    """
    CPU-bound throughput by worker count, per family, as a multiple of the
    family's 1-worker rate (twistcluster's: of the single process, when it
    ran), so that Python and Node scale on one axis.
    """
    rates: dict[str, dict[int, float]] = {}
    for result in results:
        if rate := result.rate("cpu"):
            rates.setdefault(result.config.family, {})[result.config.workers] = rate
    single = rates.pop(SINGLE, {}).get(1)
    curves = {}
    for family, byWorkers in rates.items():
        base = single if family.startswith(TWISTCLUSTER) and single else byWorkers.get(1)
        if base is not None:
            curves[family] = [(n, rate / base) for n, rate in sorted(byWorkers.items())]
    return curves


def _scaling(axes: Any, results: Sequence[ConfigResult]) -> None:
    markers = iter("osD^vx*+")
    for family, points in speedUps(results).items():
        style = "-" if family.endswith("-rr") else ":"
        colour = COLOURS.get(family.split("-", 1)[0])
        axes.plot(*zip(*points), marker=next(markers, "o"), linestyle=style, color=colour, label=family)
    axes.plot([1, 4], [1, 4], color="grey", linewidth=0.8, alpha=0.5, label="linear")
    axes.set_xlabel("workers")
    axes.set_ylabel("x the 1-worker (twistcluster: single-process) rate")
    axes.set_xticks([1, 2, 4])
    axes.set_title("CPU-bound variant (/work): throughput scaling with workers", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


def writeChart(path: Path, results: Sequence[ConfigResult], subtitle: str) -> bool:
    """
    Draw the chart to C{path}.

    @return: Whether it was drawn (not without matplotlib).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        return False
    measured = [r for r in results if r.status == "ok"]
    figure, grid = pyplot.subplots(2, 2, figsize=(14, 10))
    _bars(
        grid[0][0],
        measured,
        [r.rate("short") or 0 for r in measured],
        "new connections/s (Connection: close)",
    )
    _bars(grid[0][1], measured, [r.rate("keepalive") or 0 for r in measured], "keep-alive requests/s")
    _scaling(grid[1][0], measured)
    _bars(
        grid[1][1],
        measured,
        [r.masterPeakRSSKiB / 1024 for r in measured],
        "master peak RSS under load (MiB)",
    )
    figure.suptitle(f"twistcluster vs Node cluster vs single-process Twisted\n{subtitle}", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True
