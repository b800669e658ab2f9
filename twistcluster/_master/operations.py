# -*- test-case-name: tests.test_ctl -*-
"""
What an operator can ask of a running master over its control socket, each
the same as its signal (C{reload} is C{HUP}, C{add}/C{remove} are
C{TTIN}/C{TTOU}, C{stop} is C{TERM}, C{reopen-logs} is C{USR1}), answered
when it is done, with its outcome.

Every answer is a JSON object with C{"ok"}; a failure has C{"error"}, one
line saying why.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.logger import Logger

from .controlsocket import Command, upgradeAnswer
from .journal import Journal
from .signaldispatch import Signalled
from .status import ClusterStatus


class Operated(Signalled, Protocol):
    """
    What the operations need of the master (L{twistcluster._master.service.Master}):
    what its signals need, and its supervisor.
    """

    supervisor: Any


#: One-line help for each command, in the order C{help} lists them.
HELP = {
    "status": "status: the master, its listeners, every worker, the last events",
    "reload": "reload: a rolling restart (as HUP); answers when done",
    "scale": "scale N: run N workers; answers when they are ready, or the surplus ones gone",
    "add": "add: one worker more (as TTIN); answers when it is ready",
    "remove": "remove: one worker fewer (as TTOU); answers when it has left",
    "stop": "stop: a graceful stop (as TERM); a second one stops now",
    "reopen-logs": "reopen-logs: reopen the log file (as USR1)",
    "upgrade": "upgrade: upgrade the master in place (as USR2)",
    "help": "help: this list",
}


def _refused(error: str, **details: Any) -> dict[str, Any]:
    return {"ok": False, "error": error, **details}


class Operations:
    """
    The control socket's commands for one master.
    """

    _log = Logger()

    def __init__(self, master: Operated, status: ClusterStatus, journal: Journal | None = None) -> None:
        self._master = master
        self._status = status
        self._journal = journal

    def commands(self) -> dict[str, Command]:
        return {
            "status": self.status,
            "reload": self.reload,
            "scale": self.scale,
            "add": self.add,
            "remove": self.remove,
            "stop": self.stop,
            "reopen-logs": self.reopenLogs,
            "upgrade": self.upgrade,
            "help": self.help,
        }

    def _busy(self) -> str | None:
        """
        Why the workers cannot be changed now (as C{HUP}, C{TTIN}, C{TTOU}
        are ignored then), or L{None}.
        """
        if self._master.isStopping():
            return "the master is stopping"
        if self._master.upgrade.underWay():
            return "an upgrade is under way"
        return None

    def status(self, arguments: list[str]) -> Deferred[dict[str, Any]]:
        return self._status.status().addCallback(lambda document: {"ok": True, **document})

    def help(self, arguments: list[str]) -> dict[str, Any]:
        return {"ok": True, "commands": list(HELP.values())}

    @inlineCallbacks
    def reload(self, arguments: list[str]) -> Generator[Deferred[Any], Any, dict[str, Any]]:
        if arguments:
            return _refused("reload takes no arguments")
        refusal = self._busy()
        if refusal is not None:
            return _refused(refusal)
        self._log.info("reload asked over the control socket")
        count = len(self._master.supervisor.serving())
        replaced = yield self._master.restartAll()
        if replaced >= count:
            return {"ok": True, "replaced": replaced, "workers": count}
        last = self._journal.last("exit") if self._journal is not None else None
        said = f" (the last one: {last.reason})" if last is not None and "boot-failure" in last.reason else ""
        return _refused(
            f"kept {count - replaced} of {count} old workers: their replacements failed to boot{said}",
            replaced=replaced,
            workers=count,
        )

    def scale(self, arguments: list[str]) -> Deferred[dict[str, Any]] | dict[str, Any]:
        if len(arguments) != 1 or not arguments[0].isdigit() or int(arguments[0]) < 1:
            return _refused(f"scale takes one number of workers, at least 1, not {' '.join(arguments)!r}")
        return self._scaleTo(int(arguments[0]))

    def add(self, arguments: list[str]) -> Deferred[dict[str, Any]] | dict[str, Any]:
        if arguments:
            return _refused("add takes no arguments")
        return self._scaleTo(self._master.supervisor.size + 1)

    def remove(self, arguments: list[str]) -> Deferred[dict[str, Any]] | dict[str, Any]:
        if arguments:
            return _refused("remove takes no arguments")
        if self._master.supervisor.size <= 1:
            return _refused("not shrinking below one worker")
        return self._scaleTo(self._master.supervisor.size - 1)

    @inlineCallbacks
    def _scaleTo(self, count: int) -> Generator[Deferred[Any], Any, dict[str, Any]]:
        refusal = self._busy()
        if refusal is not None:
            return _refused(refusal)
        pool = self._master.supervisor
        self._log.info("scale to {count} workers asked over the control socket", count=count)
        before = set(pool.workers)
        leaving: list[Any] = []
        while pool.size < count:
            self._master.addWorker()
        while pool.size > count:
            serving = set(pool.serving())
            self._master.removeWorker()
            leaving += serving - set(pool.serving())
        started = [pool.workers[i] for i in sorted(set(pool.workers) - before)]
        ready = yield gatherResults([w.whenReady() for w in started])
        yield gatherResults([w.whenExited() for w in leaving])
        failed = ready.count(False)
        if failed:
            return _refused(
                f"{failed} of {len(started)} new workers failed to boot; replacements are on their way",
                workers=count,
                ready=pool.readyCount,
            )
        return {"ok": True, "workers": count, "ready": pool.readyCount}

    def stop(self, arguments: list[str]) -> dict[str, Any]:
        if arguments:
            return _refused("stop takes no arguments")
        self._master.requestStop("stop over the control socket")
        return {"ok": True, "stopping": True}

    def reopenLogs(self, arguments: list[str]) -> dict[str, Any]:
        if arguments:
            return _refused("reopen-logs takes no arguments")
        self._master.reopenLogs("reopen-logs over the control socket")
        return {"ok": True}

    def upgrade(self, arguments: list[str]) -> Deferred[dict[str, Any]] | dict[str, Any]:
        if arguments:
            return _refused("upgrade takes no arguments")
        self._log.info("upgrade asked over the control socket")
        # A successful one is answered by the new image of the master.
        answer = self._master.upgrade.start()
        return answer.addCallback(upgradeAnswer)
