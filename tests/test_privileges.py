"""
--user, --group, --umask: a master started as root binds a privileged port
and reads a root-only TLS key, then it and its workers serve as `nobody`.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests._cluster import PROJECT, TWIST, connect, readLine, waitUntil
from tests._nobody import NoNobody, idsOf, nobodyRuntime, privilegedPort
from tests._tls import selfSignedCertificate

DROP = (
    "import os, sys; os.setgroups([]); os.setgid({gid}); os.setuid({uid}); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class App:
    """
    The test application under a directory `nobody` can read, and the
    Python `nobody` runs it with.
    """

    def __init__(self, directory: Path, python: str, env: dict[str, str]) -> None:
        self.directory = directory
        self.python = python
        self.env = env
        shutil.copy(PROJECT / "tests" / "serviceapps.py", directory)
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        self.groups = sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
        # Where nobody may create and remove files (the pid file, sockets).
        self.run = directory / "run"
        self.run.mkdir()
        os.chown(self.run, self.uid, self.gid)

    def command(self, *args: str, asNobody: bool = False) -> list[str]:
        twist = [self.python, "-m", "twisted", "--log-format", "json", "cluster", *args]
        if asNobody:
            return [self.python, "-c", DROP.format(uid=self.uid, gid=self.gid), *twist]
        return twist

    def start(self, cluster, *args: str, asNobody: bool = False):
        command = self.command(*args, asNobody=asNobody)
        # Started by nobody: its control socket goes where nobody may write.
        env = dict(self.env, XDG_RUNTIME_DIR=str(self.run)) if asNobody else self.env
        return cluster(*args, command=command, cwd=self.directory, env=env)

    def rootOnlyKey(self) -> tuple[Path, Path]:
        """
        A self-signed certificate, and its key readable by root alone.
        """
        keyPath, certPath = selfSignedCertificate(self.directory)
        os.chmod(keyPath, 0o600)
        denied = subprocess.run(
            [self.python, "-c", f"open({str(keyPath)!r}).read()"],
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "PermissionError" in denied.stderr, "nobody can read the key: the test would prove nothing"
        return keyPath, certPath


@pytest.fixture
def app():
    directory = Path(tempfile.mkdtemp(prefix="twistcluster-nobody-", dir="/tmp"))
    try:
        try:
            python, env = nobodyRuntime(directory)
        except NoNobody as e:
            pytest.skip(str(e))
        yield App(directory, python, env)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def greetTLS(port: int) -> dict:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as sock:
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1024)
                assert chunk, "closed before the greeting"
                data += chunk
    return json.loads(data)


def greet(address) -> dict:
    with connect(address) as sock:
        return json.loads(readLine(sock))


def assertNobody(app: App, pid: int) -> None:
    uids, gids, groups = idsOf(pid)
    assert uids == [app.uid] * 4, (pid, uids)
    assert gids == [app.gid] * 4, (pid, gids)
    assert sorted(groups) == app.groups, (pid, groups)


def tlsPort(c) -> int:
    (match,) = [m for m in c.matches(r"listening on ssl:\S+ at tcp:127\.0\.0\.1:(\d+)")]
    return int(match.group(1))


def test_serves_as_nobody(cluster, app):
    """
    A port below 1024, a TLS endpoint whose key only root can read and a
    UNIX socket: all served, by a master and workers running as nobody
    (uid, gid, groups from /proc); the socket file and the pid file belong
    to nobody; both are removed on stop.
    """
    port = privilegedPort()
    key, cert = app.rootOnlyKey()
    sock = app.run / "app.sock"
    pidfile = app.run / "master.pid"
    c = app.start(
        cluster,
        *("--workers", "2", "--user", "nobody", "--umask", "027", "--pidfile", str(pidfile)),
        *("--listen", f"tcp:{port}:interface=127.0.0.1"),
        *("--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"),
        *("--listen", f"unix:{sock}"),
        "serviceapps.GreetingFactory",
    )
    pids = c.waitReady(2)
    c.waitFor(r"running as nobody \(uid 65534")
    for pid in [c.process.pid, *pids.values()]:
        assertNobody(app, pid)
        assert "Umask:\t0027" in Path(f"/proc/{pid}/status").read_text()
    for answer in (greet(("127.0.0.1", port)), greetTLS(tlsPort(c)), greet(str(sock))):
        assert (answer["uid"], answer["gid"]) == (app.uid, app.gid)
        assert int(answer["pid"]) in pids.values()
    for path in (sock, pidfile):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (app.uid, app.gid)
    assert pidfile.read_text() == f"{c.process.pid}\n"
    assert os.stat(pidfile).st_mode & 0o777 == 0o640
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    assert not sock.exists() and not pidfile.exists()
    assert c.leftovers() == []


def test_reuseport_as_nobody_survives_reload_and_a_killed_worker(cluster, app):
    """
    Under reuseport the master binds one socket per configured worker before
    dropping privileges and gives a replaced worker's socket to its
    replacement: a rolling restart and a killed worker leave every client
    served; scaling up beyond the configured count is refused, and logged.
    """
    port = privilegedPort()
    key, cert = app.rootOnlyKey()
    c = app.start(
        cluster,
        *("--workers", "2", "--user", "nobody", "--scheduling", "reuseport"),
        *("--listen", f"tcp:{port}:interface=127.0.0.1"),
        *("--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"),
        "serviceapps.GreetingFactory",
    )
    c.waitReady(2)
    tls = tlsPort(c)

    def everyoneServed() -> set[int]:
        served = {greet(("127.0.0.1", port))["pid"] for _ in range(24)}
        served |= {greetTLS(tls)["pid"] for _ in range(8)}
        return served

    assert len(everyoneServed()) == 2
    c.signal(signal.SIGHUP)
    c.waitFor(r"rolling restart done: 2 of 2 replaced", timeout=60)
    waitUntil(lambda: len(c.matches(r"\) exited with code 0")) >= 2, 60, "the old workers to leave")
    assert len(everyoneServed()) == 2
    victim = int(c.waitReady(4)[4])
    os.kill(victim, signal.SIGKILL)
    c.waitFor(r"worker 5 \(pid \d+\) ready", timeout=60)
    served = everyoneServed()
    assert len(served) == 2 and victim not in served
    for pid in [c.process.pid, *served]:
        assertNobody(app, pid)
    c.signal(signal.SIGTTIN)
    c.waitFor(r"not adding a worker beyond 2: under --user with reuseport")
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, timeout=120, cwd=PROJECT, **kwargs)


@pytest.mark.parametrize(
    "options, error",
    [
        (["--user", "no-such-user-here"], "--user no-such-user-here: no such user"),
        (["--user", "nobody", "--group", "no-such-group-here"], "--group no-such-group-here: no such group"),
        (["--group", "nogroup"], "--group nogroup: give --user too"),
        (["--umask", "9x"], "--umask takes an octal mode such as 027, not '9x'"),
    ],
)
def test_bad_user_group_umask(options, error, tmp_path):
    """
    One line naming the culprit, exit 64, nothing bound or written.
    """
    sock = tmp_path / "s.sock"
    done = run(TWIST, "cluster", *options, "--listen", f"unix:{sock}", "tests.serviceapps.GreetingFactory")
    assert done.returncode == 64
    assert done.stderr == f"twist cluster: error: {error}\n"
    assert list(tmp_path.iterdir()) == []


def test_user_without_root(cluster, app):
    """
    Not root: --user naming someone else is a one-line error (exit 64);
    naming the user already running changes nothing and serves.
    """
    done = subprocess.run(
        app.command("--user", "root", "--listen", "tcp:0:interface=127.0.0.1", "serviceapps.GreetingFactory"),
        user=app.uid,
        group=app.gid,
        extra_groups=[],
        env=dict(os.environ, **app.env),
        cwd=app.directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 64, done.stderr
    assert re.fullmatch(
        r"twist cluster: error: --user root: only root can run as another user "
        r"\(this runs as uid 65534, gid \d+\)\n",
        done.stderr,
    ), done.stderr
    c = app.start(
        cluster,
        *("--workers", "1", "--user", "nobody", "--listen", "tcp:0:interface=127.0.0.1"),
        "serviceapps.GreetingFactory",
        asNobody=True,
    )
    c.waitReady(1)
    assert greet(c.address())["uid"] == app.uid
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


def test_factory_is_checked_as_the_user(app):
    """
    FACTORY is loaded as the target user, never as root: a module only root
    can read is a one-line FACTORY error (exit 64), and nothing was bound.
    """
    secret = app.directory / "rootonly.py"
    secret.write_text("from serviceapps import GreetingFactory\n")
    os.chmod(secret, 0o600)
    port = privilegedPort()
    sock = app.run / "app.sock"
    done = subprocess.run(
        app.command(
            *("--user", "nobody", "--listen", f"tcp:{port}:interface=127.0.0.1", "--listen", f"unix:{sock}"),
            "rootonly.GreetingFactory",
        ),
        env=dict(os.environ, **app.env),
        cwd=app.directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 64, done.stderr
    assert done.stderr.startswith("twist cluster: error: FACTORY: ") and done.stderr.count("\n") == 1
    assert "rootonly" in done.stderr
    assert not sock.exists()
    probe = socket.socket()
    probe.bind(("127.0.0.1", port))
    probe.close()
