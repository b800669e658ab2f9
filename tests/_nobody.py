"""
Running a master as root that serves as `nobody`: a Python, a code tree
and an application directory that `nobody` can read, or the reason there is
none (the tests that need one skip with it).

The virtual environment's interpreter may live where `nobody` cannot go
(pyenv under /root, mode 0700): the system's Python of the same version then
runs the same site-packages (its compiled extensions share the ABI).  Where
the site-packages or the project are not readable by `nobody` either, they
are copied under the test's directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import site
import socket
import subprocess
import sys
from pathlib import Path

from tests._cluster import PROJECT

PROBE = "import twistcluster, twisted, OpenSSL, setproctitle, automat, attrs, zope.interface"


class NoNobody(Exception):
    """
    There is no way to run the master as `nobody` here; the message says why.
    """


def _sitePackages() -> list[str]:
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def _probe(python: str, pythonpath: list[str], cwd: str) -> str | None:
    """
    None if `nobody` can run C{python} and import everything; else why not.
    """
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(pythonpath)}
    try:
        done = subprocess.run(
            [python, "-c", PROBE],
            user="nobody",
            group=pwd.getpwnam("nobody").pw_gid,
            extra_groups=[],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError as e:
        return f"{python}: {e.strerror}"
    if done.returncode:
        return (done.stderr.strip().splitlines() or ["?"])[-1]
    return None


def nobodyRuntime(directory: Path) -> tuple[str, dict[str, str]]:
    """
    A Python and an environment with which `nobody` runs twistcluster, the
    application directory being C{directory} (a new directory under /tmp,
    which this makes readable by `nobody`).

    @raise NoNobody: Not root, no `nobody`, or no interpreter it can run.
    """
    if os.geteuid() != 0:
        raise NoNobody("needs root (CI runs as root)")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        raise NoNobody("no user nobody on this machine") from None
    os.chmod(directory, 0o755)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pythons = [sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"]
    pythonpath = [str(PROJECT), *_sitePackages()]
    reasons = []
    for python in pythons:
        if not os.path.exists(python):
            continue
        why = _probe(python, pythonpath, str(directory))
        if why is not None and not why.startswith(python):
            # It runs, but cannot read the code where it is: a copy it can.
            copied = _copyCode(directory)
            why = _probe(python, copied, str(directory))
            if why is None:
                pythonpath = copied
        if why is None:
            return python, {"PYTHONPATH": os.pathsep.join(pythonpath)}
        reasons.append(f"{python}: {why}")
    raise NoNobody("nobody can run no Python with twistcluster here (" + "; ".join(reasons) + ")")


def _copyCode(directory: Path) -> list[str]:
    """
    Copy the project's code and the site-packages under C{directory}.
    """
    code = directory / "code"
    if not code.exists():
        shutil.copytree(PROJECT / "twistcluster", code / "project" / "twistcluster")
        shutil.copytree(PROJECT / "twisted", code / "project" / "twisted")
        for index, packages in enumerate(_sitePackages()):
            shutil.copytree(packages, code / f"site{index}", symlinks=True)
        for path in [code, *code.rglob("*")]:
            os.chmod(path, os.stat(path).st_mode | 0o755 if path.is_dir() else os.stat(path).st_mode | 0o644)
    return [str(code / "project"), *(str(p) for p in sorted(code.glob("site*")))]


def privilegedPort() -> int:
    """
    A port below 1024 free on 127.0.0.1 now (root binds it for the test).
    """
    import random

    for port in random.sample(range(600, 1024), 424):
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            probe.close()
        return port
    raise NoNobody("no free port below 1024")


def idsOf(pid: int) -> tuple[list[int], list[int], list[int]]:
    """
    The (real, effective, saved, fs) uids and gids, and the supplementary
    groups, of process C{pid}, from /proc/PID/status.
    """
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = [int(v) for v in value.split()] if name in ("Uid", "Gid", "Groups") else value
    return fields["Uid"], fields["Gid"], fields["Groups"]
