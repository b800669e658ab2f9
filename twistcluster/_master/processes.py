# -*- test-case-name: tests.test_ctl -*-
"""
The resident memory and CPU use of the master and its workers, read from
the kernel with C{psutil} when an operator asks (status, a scrape), never
on a timer.

C{psutil} is imported on first use: a master nobody asks never loads it.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen


@frozen
class ProcessSample:
    """
    One process, now.

    @ivar rssBytes: Resident memory.
    @ivar cpuSeconds: User and system CPU time since it started.
    @ivar cpuPercent: CPU use since the previous sample of it (over its
        whole life at the first), in percent of one core.
    @ivar startedAt: When it started (seconds since the epoch).
    """

    rssBytes: int
    cpuSeconds: float
    cpuPercent: float
    startedAt: float


class ProcessSampler:
    """
    Samples processes by pid, keeping each one's C{psutil.Process} between
    samples so that its CPU percentage is over the time since the last.
    """

    def __init__(self) -> None:
        self._processes: dict[int, Any] = {}

    def sample(self, pid: int | None) -> ProcessSample | None:
        """
        @return: C{pid}'s figures, or L{None} if it is gone (or not known).
        """
        if pid is None:
            return None
        import psutil

        try:
            process = self._processes.get(pid)
            first = process is None
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            with process.oneshot():
                times = process.cpu_times()
                rss = process.memory_info().rss
                startedAt = process.create_time()
                percent = process.cpu_percent(interval=None)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._processes.pop(pid, None)
            return None
        cpuSeconds = times.user + times.system
        if first:
            import time

            alive = max(time.time() - startedAt, 1e-3)
            percent = 100.0 * cpuSeconds / alive
        return ProcessSample(rss, cpuSeconds, round(percent, 1), startedAt)

    def forgetAllBut(self, pids: set[int]) -> None:
        """
        Forget the processes not in C{pids} (they are gone).
        """
        for pid in set(self._processes) - pids:
            del self._processes[pid]
