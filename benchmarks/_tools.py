"""
The outside programs the benchmark needs (C{wrk}, Node.js), installed from
Debian's packages when missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

#: Debian package -> the commands that tell it is installed.
PACKAGES = {"wrk": ("wrk",), "nodejs": ("node", "nodejs")}
INSTALL_TIMEOUT = 900


def missingPackages(wanted: list[str]) -> list[str]:
    return [p for p in wanted if not any(shutil.which(c) for c in PACKAGES[p])]


def _say(message: str) -> None:
    sys.stderr.write(f"benchmarks: {message}\n")
    sys.stderr.flush()


def ensureInstalled(wanted: list[str]) -> list[str]:
    """
    Install whichever of C{wanted} (Debian package names) is missing, with
    C{apt-get}, if we are root; otherwise say in one line what to run.

    @return: The packages still missing afterwards.
    """
    missing = missingPackages(wanted)
    if not missing:
        return []
    command = f"apt-get update && apt-get install -y {' '.join(missing)}"
    if os.geteuid() != 0:
        _say(f"{', '.join(missing)} not installed and not root: run `sudo sh -c '{command}'`")
        return missing
    _say(f"installing {', '.join(missing)}: {command}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
            subprocess.run(argv, env=env, check=True, timeout=INSTALL_TIMEOUT, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        _say(f"could not install {', '.join(missing)} ({e}); run `{command}` by hand")
    return missingPackages(missing)
