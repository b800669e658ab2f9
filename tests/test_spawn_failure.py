"""
A replacement worker that cannot be started (C{spawnProcess} raising
C{EMFILE}, the master out of descriptors), with real processes: retried with
the boot-failure backoff, logged once, and serving once descriptors are free.
(Every decision with a fake spawner: tests.test_supervisor.FailedSpawnTests.)
"""

from __future__ import annotations

import os
import resource
import signal
import time

from tests._cluster import whoServes

LOCAL = "tcp:0:interface=127.0.0.1"
APP = "tests.clusterapps.WhoAmIFactory"


def test_a_spawn_that_fails_is_retried_once_descriptors_are_free(cluster):
    """
    A worker killed while the master can open no descriptor: its
    replacement's spawn fails (EMFILE), is retried with backoff and logged
    once; as soon as descriptors are free again a replacement is started and
    serves (issue 13, 4: the spawn failed once, was never retried, and the
    cluster ran on one worker for good).
    """
    c = cluster("--workers", "2", "--listen", LOCAL, APP)
    pids = c.waitReady(2)
    address = c.address()
    master = c.process.pid
    soft, hard = resource.prlimit(master, resource.RLIMIT_NOFILE)
    # Below every descriptor the master holds, even those the dead worker's
    # channel and pipes free: no new descriptor can be opened.
    resource.prlimit(master, resource.RLIMIT_NOFILE, (1, hard))
    try:
        os.kill(pids[1], signal.SIGKILL)
        c.waitFor(r"worker 1 \(pid \d+\) exited with signal 9")
        c.waitFor(r"Too many open files")
        # Not synchronising: the episode lasts a few of the backoff's retries
        # (0.2 s, 0.4 s, 0.8 s, ...), each failing.
        time.sleep(2.0)
        assert len(c.waitReady(1)) == 2
    finally:
        resource.prlimit(master, resource.RLIMIT_NOFILE, (soft, hard))
    ready = c.waitReady(3, timeout=60)
    replacement = max(ready)
    assert replacement == 3, "failed attempts took worker ids"
    [started] = c.waitFor(rf"worker {replacement} started, after (\d+) failed attempts")
    assert int(started.group(1)) >= 2, started.group(0)
    # One line for the whole episode, not one per attempt.
    [failed] = c.matches(r"Too many open files")
    assert "cannot start a worker process: [Errno 24] Too many open files" in failed.string
    assert {whoServes(address)[0] for _ in range(6)} == {2, replacement}
    c.signal(signal.SIGTERM)
    assert c.wait(timeout=60) == 0
    assert c.leftovers() == []
