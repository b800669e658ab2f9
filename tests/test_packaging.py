"""
The `cluster` plugin is visible to `twist` from a regular install (the
wheel), not only from the editable install the Makefile makes.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests._cluster import PROJECT, TWIST

FIND_PLUGIN = """
import sys
sys.path = [sys.argv[1]] + [p for p in sys.path if p.rstrip('/') != sys.argv[2]]
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
import twisted.plugins
plugins = {p.tapname: p for p in getPlugins(IServiceMaker)}
module = __import__(plugins['cluster'].module, fromlist=['makeService'])
print(module.__file__)
"""


def test_wheel_carries_the_plugin(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(PROJECT),
        ],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("twistcluster-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "twisted/plugins/twistcluster_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twistcluster/py.typed" in names
    found = subprocess.run(
        [sys.executable, "-c", FIND_PLUGIN, str(tmp_path / "site"), str(PROJECT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().startswith(str(tmp_path / "site" / "twistcluster"))


def test_twist_lists_cluster():
    """
    The editable install (`make`'s) shows the subcommand in `twist --help`.
    """
    result = subprocess.run([TWIST, "--help"], capture_output=True, text=True, timeout=60)
    assert "cluster" in result.stdout
