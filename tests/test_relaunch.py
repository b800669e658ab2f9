"""
How a master is run again for an upgrade: its command line as typed, its
directory as the shell named it, its own paths resolved; and the bootstrap
that runs the new code, and the old code again if the new one fails before
it has resumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twistcluster._master.carried import RunSpec
from twistcluster._master.relaunch import (
    _split,
    bootstrapCommand,
    logicalDirectory,
    resolved,
    thisLaunch,
    thisRunSpec,
)


@pytest.mark.parametrize(
    "argv, options, runs",
    [
        (["py", "-m", "twisted", "cluster"], [], {"module": "twisted"}),
        (
            ["py", "-X", "dev", "-u", "-W", "error", "-m", "twisted"],
            ["-X", "dev", "-u", "-W", "error"],
            {"module": "twisted"},
        ),
        (["py", "/venv/bin/twist", "cluster"], [], {"path": "/venv/bin/twist"}),
        (["py", "-O", "-c", "import x", "a"], ["-O"], {"code": "import x"}),
    ],
)
def test_an_interpreters_command_line(argv: list[str], options: list[str], runs: dict[str, str]) -> None:
    assert _split(argv)[:2] == (options, runs)


def test_an_interpreter_that_runs_nothing() -> None:
    with pytest.raises(ValueError):
        _split(["py", "-u"])


def test_an_image_the_bootstrap_started_knows_its_spec() -> None:
    spec = RunSpec("/usr/bin/python3", [], ["twist", "cluster"], "/srv", module="twisted")

    class Upgrade:
        run = spec.toJSON()

    assert thisRunSpec(upgrade=Upgrade()) == spec


def test_resolved_paths_keep_the_interpreters_name(tmp_path: Path) -> None:
    """
    The directories are resolved (C{current} has moved on by the time the
    old code may have to run again); an interpreter keeps its own name (a
    virtual environment is found from it).
    """
    real = tmp_path / "releases" / "1"
    (real / "bin").mkdir(parents=True)
    (real / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / "current").symlink_to(real)
    current = str(tmp_path / "current")
    spec = RunSpec(
        f"{current}/bin/python",
        [],
        ["x"],
        current,
        path=f"{current}/bin/twist",
        pythonPath=f"{current}:/usr/lib",
    )
    assert resolved(spec) == RunSpec(
        f"{real}/bin/python", [], ["x"], str(real), path=f"{real}/bin/twist", pythonPath=f"{real}:/usr/lib"
    )


def test_the_directory_as_the_shell_named_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path / "link")
    assert logicalDirectory({"PWD": str(tmp_path / "link")}) == str(tmp_path / "link")
    # A stale or relative PWD is not believed.
    assert logicalDirectory({"PWD": str(tmp_path)}) == str(real)
    assert logicalDirectory({"PWD": "link"}) == str(real)
    assert logicalDirectory({}) == str(real)


def test_a_script_is_run_again_by_its_own_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A script run through its #! line is run again by its path: the new
    release's script names the new release's interpreter.
    """
    script = tmp_path / "twist"
    script.write_text("#!/old/venv/bin/python\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "cluster"])
    environ = {"PWD": "/nowhere", "TWISTCLUSTER_UPGRADE_STATE": "5", "HOME": "/root"}
    launch = thisLaunch(environ, ["/old/venv/bin/python", str(script), "cluster"])
    assert launch.argv == [str(script), "cluster"]
    assert launch.environ == {"PWD": "/nowhere", "HOME": "/root"}
    module = thisLaunch({}, ["/usr/bin/python3", "-m", "twisted", "cluster"])
    assert module.argv == ["/usr/bin/python3", "-m", "twisted", "cluster"]


REPORT = """
import json, os, sys
environ = os.environ.get
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "failed": environ("TWISTCLUSTER_UPGRADE_FAILED"),
                  "state": environ("TWISTCLUSTER_UPGRADE_STATE")}))
"""


def runBootstrap(tmp_path: Path, new: str, resumedFirst: bool = False) -> subprocess.CompletedProcess[str]:
    """
    The bootstrap running module C{newmain} (C{new} is its code) in
    C{tmp_path/new}; the old code (C{oldmain}, reporting how it was run) is
    in C{tmp_path/old}.
    """
    for name, code in (("new", new), ("old", REPORT)):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}main.py").write_text(code)
    newSpec = RunSpec(sys.executable, [], ["newmain", "a"], str(tmp_path / "new"), module="newmain")
    oldSpec = RunSpec(
        sys.executable,
        ["-B"],
        ["oldmain", "b"],
        str(tmp_path / "old"),
        module="oldmain",
        pythonPath=str(tmp_path / "old"),
    )
    command = bootstrapCommand(newSpec, oldSpec)
    environ = dict(os.environ, PYTHONPATH=str(tmp_path / "new"), TWISTCLUSTER_UPGRADE_STATE="7")
    return subprocess.run(
        command, env=environ, cwd=tmp_path / "new", capture_output=True, text=True, timeout=60
    )


def test_the_bootstrap_runs_the_old_code_again_if_the_new_fails(tmp_path: Path) -> None:
    ran = runBootstrap(tmp_path, "import sys\nassert sys.argv[1:] == ['a']\nraise RuntimeError('broken')\n")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {
        "argv": [str(tmp_path / "old" / "oldmain.py"), "b"],
        "cwd": str(tmp_path / "old"),
        "failed": "RuntimeError: broken",
        "state": "7",
    }
    assert (
        "the new master failed before it resumed: RuntimeError: broken; running the old code again"
        in ran.stderr
    )


def test_the_bootstrap_leaves_a_master_that_resumed_alone(tmp_path: Path) -> None:
    ran = runBootstrap(tmp_path, "import sys\nsys.twistclusterUpgrade.resumed()\nsys.exit(3)\n")
    assert (ran.returncode, ran.stdout) == (3, "")


def test_the_bootstrap_leaves_a_clean_exit_alone(tmp_path: Path) -> None:
    ran = runBootstrap(tmp_path, "print('done')\n")
    assert (ran.returncode, ran.stdout) == (0, "done\n")
