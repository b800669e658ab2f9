"""
The rogue-worker helper: a real `twist cluster` whose worker 1 misbehaves on
its control channel on cue (tests.rogue names the misbehaviours), while
clients keep making requests to every worker.

    rogue = RogueCluster(cluster, tmp_path, "garbage")
    with rogue.load() as load:
        rogue.misbehave()
        ...  # wait for what the master does
    assert load.failed() == []
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._cluster import Cluster, connect, readLine

LOCAL = "tcp:0:interface=127.0.0.1"
ROGUE_ID = 1


class Load:
    """
    Clients making short requests from a few threads until stopped:
    connect, read the greeting (which names the worker), echo a line,
    close.  Each request is recorded with the worker that greeted it.
    """

    def __init__(self, address: tuple[str, int], threads: int = 2, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self.served: Counter[int] = Counter()
        #: (the worker that greeted it, or None; what went wrong)
        self.failures: list[tuple[int | None, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            worker: int | None = None
            try:
                with connect(self.address, timeout=self.timeout) as sock:
                    greeting = readLine(sock)
                    match = re.match(r"worker=(\d+) ", greeting)
                    if match is None:
                        raise OSError(f"no greeting: {greeting!r}")
                    worker = int(match.group(1))
                    sock.sendall(b"ping\n")
                    if readLine(sock) != "ping\n":
                        raise OSError("no echo")
            except OSError as e:
                with self._lock:
                    self.failures.append((worker, repr(e)))
            else:
                with self._lock:
                    self.served[worker] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.served.values())

    def failed(self, excusing: int | None = ROGUE_ID) -> list[tuple[int | None, str]]:
        """
        The requests that failed, but for those the worker C{excusing} had
        already taken (it greeted them: it held the connection).
        """
        with self._lock:
            return [f for f in self.failures if excusing is None or f[0] != excusing]

    def waitForMore(self, count: int, timeout: float = 30.0, by: int | None = None) -> None:
        """
        Wait until C{count} more requests have been served (by worker C{by}).
        """
        with self._lock:
            start = self.served[by] if by is not None else sum(self.served.values())
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                now = self.served[by] if by is not None else sum(self.served.values())
            if now >= start + count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {count} more requests (by {by}): {self.served}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 10)
            assert not thread.is_alive()


class RogueCluster:
    """
    A cluster of C{workers} workers serving tests.rogue.RogueFactory, worker
    1 being the rogue that does C{misbehaviour} on cue.
    """

    def __init__(
        self,
        cluster: Callable[..., Cluster],
        tmp_path: Path,
        misbehaviour: str,
        workers: int = 3,
        options: tuple[str, ...] = (),
    ) -> None:
        self.misbehaviour = misbehaviour
        self.trigger = tmp_path / "misbehave-now"
        env = {"ROGUE": misbehaviour, "ROGUE_WORKER": str(ROGUE_ID), "ROGUE_TRIGGER": str(self.trigger)}
        self.c = cluster(
            "--workers", str(workers), "--listen", LOCAL, *options, "tests.rogue.RogueFactory", env=env
        )
        self.pids = self.c.waitReady(workers)
        self.address = self.c.address()
        self.masterPid = self.c.process.pid

    @contextmanager
    def load(self, threads: int = 2) -> Iterator[Load]:
        load = Load(self.address, threads)
        try:
            load.waitForMore(20)
            yield load
        finally:
            load.stop()
            # The numbers of the misbehaviour table (seen with pytest -rA or -s).
            held = len(load.failures) - len(load.failed())
            print(
                f"rogue {self.misbehaviour}: served {sorted(load.served.items())};"
                f" failed {len(load.failures)}, {held} of them held by worker {ROGUE_ID}"
            )

    def misbehave(self) -> None:
        self.trigger.touch()
        self.c.waitFor(rf"rogue worker {ROGUE_ID}: {re.escape(self.misbehaviour)}$")

    def masterDescriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.masterPid}/fd"))

    def masterResident(self) -> int:
        for line in Path(f"/proc/{self.masterPid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def rogueReplaced(self, timeout: float = 30.0) -> int:
        """
        Wait until the rogue has exited and a new worker is ready; its id.
        """
        self.c.waitFor(rf"worker {ROGUE_ID} \(pid \d+\) exited with", timeout=timeout)
        ready = self.c.waitReady(len(self.pids) + 1, timeout=timeout)
        return max(ready)
