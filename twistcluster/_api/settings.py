# -*- test-case-name: tests.test_cluster_api -*-
"""
C{cluster.settings} and C{cluster.schedulingPolicy}, as Node has them: what
C{fork()} starts, and how the primary spreads connections.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .._common.policies import (
    SCHED_LEAST_CONN,
    SCHED_NONE,
    SCHED_REUSEPORT,
    SCHED_RR,
    SchedulingPolicy,
    schedulingPolicy,
)
from .._master.spawner import WorkerCommand

_POLICIES = {
    SCHED_NONE: SchedulingPolicy.NONE,
    SCHED_RR: SchedulingPolicy.RR,
    SCHED_LEAST_CONN: SchedulingPolicy.LEAST_CONN,
    SCHED_REUSEPORT: SchedulingPolicy.REUSEPORT,
}


#: The longest message a worker may send the primary (C{worker.send}), in
#: bytes of JSON, unless C{setupPrimary(maxMessageSize=...)} says otherwise
#: (L{None}: no bound).  The primary drops a longer one chunk by chunk as it
#: arrives, and the worker's send fails with L{MessageTooLarge}.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


class BadSetting(ValueError):
    """
    A setting that cannot work; the message names it, in one line.
    """


def policyFromEnvironment(environ: Mapping[str, str]) -> int:
    """
    The policy C{$TWISTCLUSTER_SCHED_POLICY} names (as
    C{NODE_CLUSTER_SCHED_POLICY} does in Node), else L{SCHED_RR}.

    @raise BadSetting: The variable names no policy.
    """
    try:
        policy = schedulingPolicy(None, environ)
    except ValueError as e:
        raise BadSetting(str(e)) from None
    return next(constant for constant, p in _POLICIES.items() if p is policy)


def schedulingFor(policy: int) -> SchedulingPolicy:
    """
    @raise BadSetting: Not one of the C{SCHED_*} constants.
    """
    try:
        return _POLICIES[policy]
    except (KeyError, TypeError):
        raise BadSetting(
            "schedulingPolicy is one of SCHED_RR, SCHED_NONE, SCHED_LEAST_CONN, SCHED_REUSEPORT, "
            f"not {policy!r}"
        ) from None


def defaultSettings(argv: Sequence[str]) -> dict[str, Any]:
    """
    Node's defaults, in Python: the worker runs the primary's own script
    (C{sys.argv[0]}) with its arguments and the same interpreter.
    """
    return {
        "exec": os.path.abspath(argv[0]) if argv and argv[0] not in ("", "-c", "-m") else None,
        "args": list(argv[1:]),
        "execArgv": [],
        "cwd": None,
        "env": {},
        "uid": None,
        "gid": None,
        "silent": False,
        "shutdownTimeout": 30.0,
        "maxMessageSize": DEFAULT_MAX_MESSAGE_SIZE,
    }


_KINDS: dict[str, tuple[type, ...]] = {
    "exec": (str, os.PathLike),
    "args": (list, tuple),
    "execArgv": (list, tuple),
    "cwd": (str, os.PathLike, type(None)),
    "env": (dict,),
    "uid": (int, type(None)),
    "gid": (int, type(None)),
    "silent": (bool,),
    "shutdownTimeout": (int, float),
    "maxMessageSize": (int, type(None)),
}


def mergeSettings(current: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """
    C{current} with C{given} over it (Node: defaults, then the current
    settings, then the new ones).

    @raise BadSetting: An unknown setting, or a value of the wrong kind.
    """
    merged = dict(current)
    for name, value in given.items():
        kinds = _KINDS.get(name)
        if kinds is None:
            raise BadSetting(f"no setting is called {name!r} (known: {', '.join(_KINDS)})")
        if not isinstance(value, kinds):
            raise BadSetting(f"setting {name!r} cannot be {value!r}")
        merged[name] = _normalised(name, value)
    return merged


def _normalised(name: str, value: Any) -> Any:
    if name == "exec":
        return os.path.abspath(value)
    if name in ("args", "execArgv"):
        return [str(v) for v in value]
    if name == "env":
        return {str(k): str(v) for k, v in value.items()}
    return value


def workerCommand(settings: Mapping[str, Any], env: Mapping[str, Any] | None) -> WorkerCommand:
    """
    How C{fork(env)} starts a worker under C{settings}.

    @raise BadSetting: There is no script to run, or no such script or
        directory.
    """
    script, cwd = settings["exec"], settings["cwd"]
    if script is None:
        raise BadSetting("no script to fork: call cluster.setupPrimary(exec='worker.py') first")
    where = cwd if cwd is not None else os.getcwd()
    if not os.path.isfile(os.path.join(where, script)):
        raise BadSetting(f"setting 'exec' is not a file: {script!r}")
    if cwd is not None and not os.path.isdir(cwd):
        raise BadSetting(f"setting 'cwd' is not a directory: {cwd!r}")
    environment = dict(settings["env"])
    environment.update({str(k): str(v) for k, v in (env or {}).items()})
    return WorkerCommand(
        [sys.executable, *settings["execArgv"], script, *settings["args"]],
        env=environment,
        cwd=None if cwd is None else os.fspath(cwd),
        uid=settings["uid"],
        gid=settings["gid"],
        relayOutput=settings["silent"],
    )
