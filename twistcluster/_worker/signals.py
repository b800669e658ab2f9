# -*- test-case-name: tests.test_signals -*-
"""
A worker's signals.  The master alone orchestrates: the signals an operator
sends the master reach the workers too when they are sent to the whole
process group (Ctrl-C, Ctrl-\\, C{kill -HUP -PGID}), so a worker ignores them
(INT, QUIT, HUP, USR2, TTIN, TTOU).  TERM sent to a worker itself (systemd
signals the whole control group) drains it like a disconnect.  USR1 (which
the master passes on) reopens the access log of every C{twisted.web} site
the worker serves; a worker never dies of it.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.logger import Logger

from .._common.reactors import IWorkerReactor
from .._common.twistedinternals import hasAccessLog, reopenAccessLog
from .runtime import WorkerRuntime

GROUP_SIGNALS = (
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR2,
    signal.SIGTTIN,
    signal.SIGTTOU,
)

_log = Logger()


def ignoreGroupSignals() -> None:
    """
    Ignore the master's signals, and USR1 until the reactor runs: first
    thing, before any reactor or user code.  C{SIG_IGN}, not a Python
    handler that does nothing: Python puts back the default action of the
    signals it handles when it exits, and a worker on its way out must not
    die of a signal sent to the group either.
    """
    for signum in (*GROUP_SIGNALS, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    # The master spawns workers with these blocked (see
    # twistcluster._master.signals.heldForChild): any sent meanwhile is
    # delivered now, to the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (*GROUP_SIGNALS, signal.SIGUSR1))


def handleSignals(reactor: IWorkerReactor, runtime: WorkerRuntime) -> None:
    """
    Ignore the master's signals now (again, for a worker the cluster API
    started); once running (replacing the reactor's own handlers), TERM
    drains and USR1 reopens log files.
    """
    ignoreGroupSignals()

    def install() -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: reactor.callFromThread(runtime.disconnect))
        signal.signal(signal.SIGUSR1, lambda signum, frame: reactor.callFromThread(reopenLogs, runtime))

    reactor.callWhenRunning(install)
    # Python's handler would give way to the default action (death) while
    # the process exits.
    reactor.addSystemEventTrigger("after", "shutdown", signal.signal, signal.SIGUSR1, signal.SIG_IGN)


def _innermost(factory: Any) -> Any:
    # Wrapping factories (TLS, haproxy:, policies) name what they wrap.
    seen = 0
    while getattr(factory, "wrappedFactory", None) is not None and seen < 10:
        factory = factory.wrappedFactory
        seen += 1
    return factory


def reopenLogs(runtime: WorkerRuntime) -> None:
    """
    Reopen the access log of each C{twisted.web} site (an C{HTTPFactory}
    with a C{logPath}) this worker serves, after logrotate moved it.  An
    application with files of its own installs its own USR1 handler.
    """
    reopened = []
    for port in runtime.clusterReactor.ports:
        factory = _innermost(getattr(port, "factory", None))
        path = getattr(factory, "logPath", None)
        if not path or path in reopened or not hasAccessLog(factory):
            continue
        try:
            reopenAccessLog(factory, path)
        except OSError as e:
            _log.error(
                "worker {workerId}: cannot reopen {path}: {error}",
                workerId=runtime.workerId,
                path=path,
                error=e.strerror,
            )
            continue
        reopened.append(path)
    _log.info(
        "worker {workerId}: SIGUSR1: reopened {count} log files",
        workerId=runtime.workerId,
        count=len(reopened),
    )
