"""
What a process costs, read from C{/proc}: CPU time, resident memory, and its
descendants.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _statFields(pid: int) -> list[str]:
    """
    The fields of C{/proc/PID/stat} after the command name (which may hold
    spaces and parentheses): index 0 is the state (field 3).
    """
    text = (PROC / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of C{pid} so far, in seconds (0 if it is gone).
    """
    try:
        fields = _statFields(pid)
    except (OSError, ValueError):
        return 0.0
    # utime and stime are fields 14 and 15 of /proc/PID/stat.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memoryKiB(pid: int) -> dict[str, int]:
    """
    C{VmRSS} and C{VmHWM} of C{pid}, in KiB (empty if it is gone).
    """
    found: dict[str, int] = {}
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def descendants(pid: int) -> list[int]:
    """
    Every live process below C{pid} (children, grandchildren...).
    """
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_statFields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


class MemorySampler:
    """
    Samples a process's C{VmRSS} in a thread while a load runs; the peak is
    the resident memory "under load".
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peakRSS = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = memoryKiB(self._pid).get("VmRSS", 0)
            self.peakRSS = max(self.peakRSS, rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class CPUMeter:
    """
    CPU used by a process (and, separately, by it plus its descendants)
    between L{start} and L{stop}, as a percentage of one core.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._pids: list[int] = []
        self._started = 0.0
        self._master = 0.0
        self._all = 0.0
        self.masterPercent = 0.0
        self.allPercent = 0.0

    def _readAll(self) -> float:
        return sum(cpuSeconds(pid) for pid in self._pids)

    def start(self) -> None:
        self._pids = [self._pid, *descendants(self._pid)]
        self._started = time.monotonic()
        self._master = cpuSeconds(self._pid)
        self._all = self._readAll()

    def stop(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        self.masterPercent = 100 * (cpuSeconds(self._pid) - self._master) / elapsed
        self.allPercent = 100 * (self._readAll() - self._all) / elapsed
