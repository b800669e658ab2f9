"""
A stand-in for what systemd does when it restarts a socket-activated
service: it keeps the listening sockets it was given (fd 3 and up, from
systemd-socket-activate) and starts COMMAND again and again, one run after
the other, each with LISTEN_PID naming that run's process.

    python -m tests._relaunch RUNS -- COMMAND...

TERM stops it: the run in progress gets TERM, and no other starts.
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> None:
    runs, separator, *command = argv
    assert separator == "--" and command
    state = {"child": 0, "stopping": False}

    def stop(signum: int, frame: object) -> None:
        state["stopping"] = True
        if state["child"]:
            os.kill(state["child"], signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    for _ in range(int(runs)):
        if state["stopping"]:
            break
        pid = os.fork()
        if pid == 0:
            os.environ["LISTEN_PID"] = str(os.getpid())
            os.execv(command[0], command)
        state["child"] = pid
        print(f"relaunch: started {pid}", flush=True)
        os.waitpid(pid, 0)
        state["child"] = 0
        print(f"relaunch: {pid} ended", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
