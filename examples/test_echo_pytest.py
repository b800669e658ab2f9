"""
Testing a protocol under a real cluster with pytest: the `twistcluster`
fixture (from twistcluster.testing) starts `twist cluster` on a free port and
stops it after the test, passed or failed.

    pytest examples/test_echo_pytest.py
"""

import os
import socket

HERE = os.path.dirname(os.path.abspath(__file__))


def test_every_worker_echoes(twistcluster):
    running = twistcluster("echo.EchoFactory", workers=2, cwd=HERE)
    assert len(running.pids) == 2
    for n in range(4):
        with socket.create_connection(running.address, timeout=10) as sock:
            sock.sendall(b"hello %d\n" % n)
            assert sock.makefile("rb").readline() == b"hello %d\n" % n
