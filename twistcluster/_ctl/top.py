# -*- test-case-name: tests.test_ctl -*-
"""
C{twistcluster top}: the status, redrawn every second in a terminal (as
C{pm2 monit}); on a pipe, one snapshot per refresh, or one in all with
C{--once}.
"""

from __future__ import annotations

import time
from typing import Any

from .client import EX_OK, Connection, ControlError
from .render import statusView


def _view(document: dict[str, Any], footer: str) -> Any:
    from rich.console import Group
    from rich.text import Text

    return Group(statusView(document, events=5), Text(footer, style="dim"))


def _fetch(connection: Connection) -> dict[str, Any]:
    answer = connection.ask("status")
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error")), 1)
    return answer


def top(connection: Connection, once: bool = False, interval: float = 1.0) -> int:
    """
    Show the status until interrupted (Ctrl-C: exit status 0).

    @raise ControlError: The master went away.
    """
    from .render import console as makeConsole

    console = makeConsole()
    if once:
        console.print(statusView(_fetch(connection), events=5))
        return EX_OK
    try:
        if console.is_terminal:
            _live(console, connection, interval)
        else:
            while True:
                console.print(_view(_fetch(connection), _footer()))
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return EX_OK


def _footer() -> str:
    return f"{time.strftime('%H:%M:%S')}  refreshed every second; Ctrl-C quits"


def _live(console: Any, connection: Connection, interval: float) -> None:
    from rich.live import Live

    with Live(_view(_fetch(connection), _footer()), console=console, auto_refresh=False) as live:
        live.refresh()
        while True:
            time.sleep(interval)
            live.update(_view(_fetch(connection), _footer()), refresh=True)
