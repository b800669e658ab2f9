# -*- test-case-name: tests.test_ctl -*-
"""
C{twistcluster [--control PATH | --pid PID] COMMAND}: drive a running
master over its control socket.  See the README ("Operating a running
cluster") for the commands, their output and the exit statuses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from .client import EX_FAILED, EX_OK, EX_USAGE, Connection, ControlError, pickMaster

PROG = "twistcluster"


def _version() -> str:
    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    return f"twistcluster {of('twistcluster')} (Twisted {of('twisted')})"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see {PROG} --help)\n")
        raise SystemExit(EX_USAGE)


def _parser() -> argparse.ArgumentParser:
    chooser = _Parser(add_help=False)
    chooser.add_argument(
        "--control", metavar="PATH", default=argparse.SUPPRESS, help="the master's control socket"
    )
    chooser.add_argument(
        "--pid", metavar="PID", type=int, default=argparse.SUPPRESS, help="the master's process id"
    )
    parser = _Parser(
        prog=PROG,
        parents=[chooser],
        description="Drive a running twist cluster master over its control socket.",
        epilog="Without --control or --pid, the only running master is used.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    status = commands.add_parser("status", parents=[chooser], help="the master, its listeners and workers")
    status.add_argument("--json", action="store_true", help="the status document, as JSON")
    top = commands.add_parser("top", parents=[chooser], help="a live view, refreshed every second")
    top.add_argument("--once", action="store_true", help="one snapshot, then exit")
    top.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    commands.add_parser("reload", parents=[chooser], help="rolling restart (HUP); waits until done")
    scale = commands.add_parser("scale", parents=[chooser], help="run N workers; waits until done")
    scale.add_argument("count", metavar="N", type=int)
    commands.add_parser("add", parents=[chooser], help="one worker more (TTIN)")
    commands.add_parser("remove", parents=[chooser], help="one worker fewer (TTOU)")
    stop = commands.add_parser("stop", parents=[chooser], help="graceful stop (TERM); waits until stopped")
    stop.add_argument("--no-wait", action="store_true", help="return once the stop has begun")
    commands.add_parser("reopen-logs", parents=[chooser], help="reopen the log file (USR1)")
    commands.add_parser("upgrade", parents=[chooser], help="upgrade the master in place (USR2)")
    return parser


def _connect(arguments: argparse.Namespace) -> Connection:
    path = pickMaster(getattr(arguments, "control", None), getattr(arguments, "pid", None))
    return Connection(path)


def _checked(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "the master refused")), EX_FAILED)
    return answer


def _status(connection: Connection, arguments: argparse.Namespace) -> int:
    answer = _checked(connection.ask("status"))
    del answer["ok"]
    if arguments.json:
        json.dump(answer, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from .render import console, statusView

        console().print(statusView(answer))
    return EX_OK


def _top(connection: Connection, arguments: argparse.Namespace) -> int:
    from .top import top

    return top(connection, once=arguments.once, interval=arguments.interval)


def _reload(connection: Connection, arguments: argparse.Namespace) -> int:
    answer = _checked(connection.ask("reload", timeout=None))
    print(f"reload done: {answer['replaced']} of {answer['workers']} workers replaced")
    return EX_OK


def _scaled(command: str) -> Callable[[Connection, argparse.Namespace], int]:
    def run(connection: Connection, arguments: argparse.Namespace) -> int:
        line = f"scale {arguments.count}" if command == "scale" else command
        answer = _checked(connection.ask(line, timeout=None))
        print(f"{answer['workers']} workers, {answer['ready']} ready")
        return EX_OK

    return run


def _stop(connection: Connection, arguments: argparse.Namespace) -> int:
    _checked(connection.ask("stop"))
    if arguments.no_wait:
        print("stopping")
        return EX_OK
    print("stopping...", flush=True)
    connection.waitClosed()
    print("stopped")
    return EX_OK


def _upgrade(connection: Connection, arguments: argparse.Namespace) -> int:
    outcome = _checked(connection.ask("upgrade", timeout=None))["upgrade"]
    print(f"upgraded: twistcluster {outcome['from']} -> {outcome['to']} ({outcome['reason']})")
    return EX_OK


def _simple(command: str, done: str) -> Callable[[Connection, argparse.Namespace], int]:
    def run(connection: Connection, arguments: argparse.Namespace) -> int:
        _checked(connection.ask(command, timeout=None))
        print(done)
        return EX_OK

    return run


_COMMANDS: dict[str, Callable[[Connection, argparse.Namespace], int]] = {
    "status": _status,
    "top": _top,
    "reload": _reload,
    "scale": _scaled("scale"),
    "add": _scaled("add"),
    "remove": _scaled("remove"),
    "stop": _stop,
    "reopen-logs": _simple("reopen-logs", "logs reopened"),
    "upgrade": _upgrade,
}


def run(argv: Sequence[str]) -> int:
    """
    Run one command line.

    @return: The exit status (see the README).
    """
    arguments = _parser().parse_args(argv)
    if hasattr(arguments, "control") and hasattr(arguments, "pid"):
        _Parser(prog=PROG).error("give --control or --pid, not both")
    if arguments.command == "scale" and arguments.count < 1:
        _Parser(prog=PROG).error(f"scale takes a number of workers, at least 1, not {arguments.count}")
    try:
        connection = _connect(arguments)
        try:
            return _COMMANDS[arguments.command](connection, arguments)
        finally:
            connection.close()
    except ControlError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return e.status


def main() -> NoReturn:
    try:
        status = run(sys.argv[1:])
        sys.stdout.flush()
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        # The reader (| head) has had enough: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = EX_OK
    raise SystemExit(status)
