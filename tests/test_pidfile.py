"""
--pidfile: written once the master serves, refused while another master
lives, replaced when stale, removed on stop.
"""

from __future__ import annotations

import os
import signal
import subprocess

from tests._cluster import PROJECT, TWIST, waitUntil

APP = "tests.serviceapps.GreetingFactory"
LISTEN = "tcp:0:interface=127.0.0.1"


def test_written_refused_while_live_removed_on_stop(cluster, tmp_path):
    pidfile = tmp_path / "master.pid"
    c = cluster("--workers", "1", "--pidfile", str(pidfile), "--listen", LISTEN, APP)
    c.waitReady(1)
    assert pidfile.read_text() == f"{c.process.pid}\n"
    sock = tmp_path / "second.sock"
    second = subprocess.run(
        [TWIST, "cluster", "--pidfile", str(pidfile), "--listen", f"unix:{sock}", APP],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 1
    assert second.stderr == (
        f"twist cluster: error: --pidfile {pidfile}: pid {c.process.pid} is running (another master?)\n"
    )
    assert not sock.exists()
    assert pidfile.read_text() == f"{c.process.pid}\n"
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    assert not pidfile.exists()


def test_stale_pidfile_replaced(cluster, tmp_path):
    """
    A pid file left by a master that died (its pid no longer runs), or one
    that holds no pid at all, is replaced.
    """
    gone = subprocess.Popen(["true"])
    gone.wait()
    for stale in (f"{gone.pid}\n", "not a pid\n"):
        pidfile = tmp_path / "master.pid"
        pidfile.write_text(stale)
        c = cluster("--workers", "1", "--pidfile", str(pidfile), "--listen", LISTEN, APP)
        c.waitReady(1)
        waitUntil(lambda p=pidfile, c=c: p.read_text() == f"{c.process.pid}\n", 10, "the new pid")
        c.waitFor(r"removed the stale pid file")
        os.kill(c.process.pid, signal.SIGTERM)
        assert c.wait() == 0
        assert not pidfile.exists()
