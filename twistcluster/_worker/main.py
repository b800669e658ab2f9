# -*- test-case-name: tests.test_cluster -*-
"""
The worker process of C{twist cluster}: C{python -m twistcluster._worker.main
(--factory NAME --listen ENDPOINT ... | --subcommand NAME -- OPTIONS)}.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .._common.proctitle import setTitle, workerTitle
from .._common.reactors import IWorkerReactor, narrowed
from .runtime import WorkerRuntime, publish
from .signals import handleSignals, ignoreGroupSignals
from .subcommand import startSubcommand


def _parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m twistcluster._worker.main")
    parser.add_argument("--reactor", default=None)
    parser.add_argument("--factory", default=None)
    parser.add_argument("--subcommand", default=None)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    parser.add_argument("subArguments", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    if (arguments.factory is None) == (arguments.subcommand is None):
        parser.error("give --factory or --subcommand")
    if arguments.subArguments[:1] == ["--"]:
        del arguments.subArguments[0]
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    ignoreGroupSignals()  # before any reactor: see twistcluster._worker.signals
    # A hung worker is killed with SIGABRT first: leave a traceback behind.
    faulthandler.enable()
    arguments = _parseArguments(sys.argv[1:] if argv is None else argv)
    if arguments.reactor:
        from twisted.application.reactors import installReactor

        installReactor(arguments.reactor)
    from twisted.internet import task
    from twisted.logger import globalLogBeginner

    from .logs import masterLogObserver

    globalLogBeginner.beginLoggingTo([masterLogObserver(sys.stderr)], redirectStandardIO=False)
    workerId = int(os.environ["TWISTCLUSTER_WORKER_ID"])
    setTitle(workerTitle(workerId, arguments.factory or arguments.subcommand))

    def run(installed: object) -> Deferred[None]:
        reactor = narrowed(installed, IWorkerReactor)
        runtime = WorkerRuntime(
            reactor,
            workerId,
            arguments.factory,
            arguments.listen,
            arguments.shutdown_timeout,
        )
        handleSignals(reactor, runtime)
        runtime.connect()
        runtime.routeListens()
        if arguments.subcommand is None:
            runtime.shareOnly(arguments.listen)
        # Before any user code runs: its cluster API (cluster.worker) uses
        # this runtime instead of connecting on its own.
        publish(runtime)
        if arguments.subcommand is not None:
            try:
                startSubcommand(reactor, arguments.subcommand, arguments.subArguments, runtime.shareOnly)
            except Exception:
                runtime.couldNotStart(Failure())
            else:
                runtime.startedPlugin()
            return runtime.whenDone()
        return runtime.run()

    task.react(run)


if __name__ == "__main__":
    main()
