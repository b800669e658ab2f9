# -*- test-case-name: tests.test_relaunch -*-
"""
How to run this master again, for an upgrade.

    - L{Launch}: the command as the operator typed it, from the directory
      the shell named (C{$PWD}, symlinks kept) and with the environment it
      started with.  The upgrade's check runs it again, so a C{current}
      symlink switched to a new release (or virtual environment) is
      followed, as a new start would follow it.
    - L{RunSpec}: how one image of the master runs (interpreter, its
      options, the module, script or code it runs, C{sys.argv}).  The
      check reports the new one's; the old image's own is recorded with its
      symlinks resolved when it starts (L{startupRunSpec}), so that the old
      code can be run again after C{current} has moved on.
    - L{BOOTSTRAP}: the few lines the new image is started with
      (C{python -c BOOTSTRAP SPEC}, the interpreter the check found).  They
      run the new master as its command line would, and if it fails before
      it has resumed (it cannot import, its start-up raises, it exits),
      they run the old code again on the same state: a rollback.  They are
      the old code's, so a broken new release cannot break them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .carried import CHECK_VARIABLE, FAILED_VARIABLE, STATE_VARIABLE, Launch, RunSpec

#: The signals the master handles that are held (blocked) across the
#: C{exec}: one that arrives meanwhile waits for the new image's handlers.
HELD_SIGNALS = frozenset(
    {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGTTIN,
        signal.SIGTTOU,
    }
)

#: Interpreter options that take a value as the next argument.
_VALUE_OPTIONS = frozenset({"-W", "-X", "--check-hash-based-pycs"})

#: Variables of the upgrade itself, never part of an environment passed on.
UPGRADE_VARIABLES = (STATE_VARIABLE, CHECK_VARIABLE, FAILED_VARIABLE)

#: Run with C{python -c BOOTSTRAP SPEC}: SPEC is JSON, C{{"run": RunSpec,
#: "rollback": RunSpec or null}}.  Standard library only, and plain enough
#: for any Python the new release may use.
BOOTSTRAP = r"""# twistcluster: a master resuming after an upgrade (twistcluster._master.relaunch)
import json, os, runpy, signal, sys, traceback
_spec = json.loads(sys.argv[-1])
_environ = dict(os.environ)
_held = [getattr(signal, name) for name in
         ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU")]
class TwistclusterUpgrade:
    run = _spec["run"]
    resumedAlready = False
    def resumed(self):
        self.resumedAlready = True
    def rollback(self, reason):
        back = _spec.get("rollback")
        if self.resumedAlready or not back:
            return
        self.resumedAlready = True
        signal.pthread_sigmask(signal.SIG_BLOCK, _held)
        sys.stderr.write("twist cluster: the new master failed before it resumed: %s; "
                         "running the old code again\n" % reason)
        sys.stdout.flush()
        sys.stderr.flush()
        environ = dict(_environ, TWISTCLUSTER_UPGRADE_FAILED=reason)
        if back.get("pythonPath") is not None:
            environ["PYTHONPATH"] = back["pythonPath"]
        os.chdir(back["cwd"])
        argv = [back["executable"], *back["options"], "-c", sys.orig_argv[-2], json.dumps({"run": back})]
        os.execve(back["executable"], argv, environ)
sys.twistclusterUpgrade = _upgrade = TwistclusterUpgrade()
sys.argv = list(_spec["run"]["argv"])
_code, _why = 0, None
try:
    if _spec["run"].get("module"):
        runpy.run_module(_spec["run"]["module"], run_name="__main__", alter_sys=True)
    elif _spec["run"].get("path"):
        runpy.run_path(_spec["run"]["path"], run_name="__main__")
    else:
        exec(compile(_spec["run"]["code"], "<string>", "exec"), {"__name__": "__main__"})
except SystemExit as e:
    _code = e.code
except BaseException as e:
    traceback.print_exc()
    _code, _why = 1, "".join(traceback.format_exception_only(type(e), e)).strip()
if _code not in (0, None):
    _upgrade.rollback(_why or "it exited with %r" % (_code,))
sys.exit(_code)
"""


def logicalDirectory(environ: Mapping[str, str]) -> str:
    """
    The current directory as the shell named it: C{$PWD} when it is the
    current directory (through symlinks), else the real path.
    """
    here = os.getcwd()
    named = environ.get("PWD")
    if named and os.path.isabs(named):
        try:
            if os.path.samestat(os.stat(named), os.stat(here)):
                return named
        except OSError:
            pass
    return here


def _isScript(path: str) -> bool:
    try:
        with open(path, "rb") as script:
            return script.read(2) == b"#!" and os.access(path, os.X_OK)
    except OSError:
        return False


def _split(origArgv: Sequence[str]) -> tuple[list[str], dict[str, str], int]:
    """
    Split an interpreter's command line: its options, what it runs
    (C{{"module": ...}}, C{{"code": ...}} or C{{"path": ...}}), and where
    the program's own arguments start.
    """
    options: list[str] = []
    arguments = list(origArgv[1:])
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument in ("-m", "-c"):
            kind = "module" if argument == "-m" else "code"
            return options, {kind: arguments[index + 1]}, index + 3
        if argument == "-" or not argument.startswith("-"):
            return options, {"path": argument}, index + 2
        options.append(argument)
        if argument in _VALUE_OPTIONS:
            options.append(arguments[index + 1])
            index += 1
        index += 1
    raise ValueError("the interpreter runs nothing a master can be run again from")


def thisRunSpec(
    origArgv: Sequence[str] | None = None, argv: Sequence[str] | None = None, upgrade: Any = None
) -> RunSpec:
    """
    How this image of the master runs: from L{BOOTSTRAP}'s spec if it
    started this image, else from the interpreter's own command line.
    """
    origArgv = sys.orig_argv if origArgv is None else origArgv
    argv = sys.argv if argv is None else argv
    upgrade = getattr(sys, "twistclusterUpgrade", None) if upgrade is None else upgrade
    if upgrade is not None:
        return RunSpec.fromJSON(dict(upgrade.run))
    options, runs, _ = _split(origArgv)
    pythonPath = os.environ.get("PYTHONPATH")
    return RunSpec(sys.executable, options, list(argv), os.getcwd(), pythonPath=pythonPath, **runs)


def _realDirectory(path: str) -> str:
    """
    C{path} with the symlinks of its directory resolved, its last part kept
    (a virtual environment's interpreter is found by its own name).
    """
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(head), tail)


def resolved(spec: RunSpec) -> RunSpec:
    """
    C{spec} with every path real: what runs this very code again after the
    symlinks that led to it have moved on.
    """
    pythonPath = spec.pythonPath
    if pythonPath:
        pythonPath = os.pathsep.join(os.path.realpath(entry) for entry in pythonPath.split(os.pathsep))
    return RunSpec(
        _realDirectory(spec.executable),
        list(spec.options),
        list(spec.argv),
        os.path.realpath(spec.cwd),
        module=spec.module,
        path=None if spec.path is None else _realDirectory(spec.path),
        code=spec.code,
        pythonPath=pythonPath,
    )


def thisLaunch(environ: Mapping[str, str], origArgv: Sequence[str] | None = None) -> Launch:
    """
    How the operator started this master: a script run through its C{#!}
    line is run again by its own path (the new release's script names its
    own interpreter).
    """
    origArgv = list(sys.orig_argv if origArgv is None else origArgv)
    argv = origArgv
    if len(origArgv) > 1 and origArgv[1] == sys.argv[0] and _isScript(origArgv[1]):
        argv = origArgv[1:]
    kept = {k: v for k, v in environ.items() if k not in UPGRADE_VARIABLES}
    return Launch(argv, logicalDirectory(environ), kept)


def bootstrapCommand(new: RunSpec, previous: RunSpec | None) -> list[str]:
    """
    The command line that starts the new image: L{BOOTSTRAP} in the
    interpreter the check found, running C{new} and, if it fails before it
    resumes, C{previous}.
    """
    spec = json.dumps({"run": new.toJSON(), "rollback": None if previous is None else previous.toJSON()})
    return [new.executable, *new.options, "-c", BOOTSTRAP, spec]


def bootstrapped() -> Any:
    """
    The L{BOOTSTRAP}'s handle if it started this image (L{None} otherwise):
    C{resumed()} once the upgrade can no longer be undone, C{rollback(why)}
    to run the old code again instead.
    """
    return getattr(sys, "twistclusterUpgrade", None)
