"""
Runs C{twist} under cProfile, the profiler's fallback when py-spy cannot
attach.  C{SIGWINCH} starts profiling, C{SIGURG} stops it and writes the
stats, so that only the window under load is measured (the master has
USR1 and USR2 for itself, and leaves these two alone).

    python -m benchmarks._cprofile_master STATS -- [twist arguments...]
"""

from __future__ import annotations

import cProfile
import signal
import sys
from typing import Any


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: python -m benchmarks._cprofile_master STATS -- [twist arguments]")
    statsPath, twistArguments = argv[0], argv[2:]
    from twisted.application.twist._twist import Twist

    profiler = cProfile.Profile()

    def start(signum: int, frame: Any) -> None:
        profiler.enable()

    def stop(signum: int, frame: Any) -> None:
        profiler.disable()
        profiler.dump_stats(statsPath)

    signal.signal(signal.SIGWINCH, start)
    signal.signal(signal.SIGURG, stop)
    Twist.main(["twist", *twistArguments])


if __name__ == "__main__":
    main(sys.argv[1:])
