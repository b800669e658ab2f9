"""
Clustered twist plugins that keep state in memory: the master warns once,
and runs them anyway.
"""

from __future__ import annotations

import getpass
import signal

from tests._cluster import connect
from tests._primary import freePort
from twistcluster._cli.sharedstate import sharedStateWarning
from twistcluster._cli.subcommand import parseSubcommand


def test_inetd_wait_services_named(tmp_path):
    conf = tmp_path / "inetd.conf"
    user = getpass.getuser()
    conf.write_text(f"4001 stream tcp nowait {user} /bin/cat cat\n")
    assert sharedStateWarning("inetd", parseSubcommand("inetd", ["--file", str(conf)])) is None
    conf.write_text(f"4001 stream tcp nowait {user} /bin/cat cat\n4002 stream tcp wait {user} /bin/cat cat\n")
    warning = sharedStateWarning("inetd", parseSubcommand("inetd", ["--file", str(conf)]))
    assert warning is not None and "(4002/tcp)" in warning


def test_stateless_plugins_not_warned():
    for name, arguments in [("web", ["--listen", "tcp:0"]), ("portforward", []), ("dns", [])]:
        assert sharedStateWarning(name, parseSubcommand(name, arguments)) is None


def test_words_warned_once_and_served(cluster):
    """
    twist words, clustered: one warning in the master's log, which says what
    users will notice; the IRC port serves.
    """
    port = freePort()
    c = cluster("--workers", "2", "--", "words", "--irc-port", f"tcp:{port}:interface=127.0.0.1")
    c.waitReady(2)
    [warning] = c.matches(r"\[twistcluster\._cli\.tap#warn\] words keeps state in memory: (.*)")
    assert "users on different workers cannot see each other" in warning.group(1)
    with connect(("127.0.0.1", port)) as sock:
        sock.sendall(b"NICK someone\r\nUSER someone 0 * :someone\r\n")
        assert sock.recv(100)
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
