# -*- test-case-name: tests.test_ctl -*-
"""
The status document as people read it: a header for the master, one line
per listener, a table of workers and the last events, drawn by C{rich}
(which leaves colours and box-drawing out on a pipe as it should).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def duration(seconds: float | None) -> str:
    """
    C{"3d04h"}, C{"2h05m"}, C{"4m07s"}, C{"12.3s"}; C{"-"} if unknown.
    """
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def size(count: int | None) -> str:
    """
    Bytes, in MiB with one decimal (C{"48.4M"}); C{"-"} if unknown.
    """
    return "-" if count is None else f"{count / (1 << 20):.1f}M"


def _value(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def _roundTrip(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def masterHeader(master: dict[str, Any]) -> Text:
    restarts = ", ".join(f"{cause} {count}" for cause, count in sorted(master.get("restarts", {}).items()))
    return Text(
        f"twistcluster {master['version']} (Twisted {master['twistedVersion']})  "
        f"master {master['pid']}  up {duration(master.get('uptime'))}  {master['phase']}\n"
        f"policy {master['policy']}  workers {master['ready']}/{master['workers']} ready  "
        f"generation {master.get('generation', 0)}  restarts: {restarts or 'none'}\n"
        f"master memory {size(master.get('rssBytes'))}  CPU {_value(master.get('cpuPercent'), '%')}"
    )


def listenersTable(listeners: list[dict[str, Any]]) -> Table:
    table = Table(title="listeners", title_justify="left", expand=False)
    for column in ("address", "policy", "accepted", "queue", "backlog", "paused", "EMFILE"):
        table.add_column(column, justify="left" if column in ("address", "policy") else "right", no_wrap=True)
    for listener in listeners:
        queue = listener.get("handOffQueue")
        table.add_row(
            listener["address"],
            listener["scheduling"],
            _value(listener.get("accepted")),
            "-" if queue is None else f"{queue}/{listener.get('handOffQueueLimit')}",
            _backlog(listener),
            _value(listener.get("backpressurePauses")),
            _value(listener.get("emfileErrors")),
        )
    return table


def _backlog(listener: dict[str, Any]) -> str:
    if listener.get("acceptQueue") is None:
        return "-"
    return f"{listener['acceptQueue']}/{listener.get('acceptQueueLimit')}"


WORKER_COLUMNS = (
    *("id", "slot", "pid", "gen", "state", "uptime"),
    *("open", "total", "memory", "CPU", "heartbeat"),
)


def workersTable(workers: list[dict[str, Any]]) -> Table:
    table = Table(title="workers", title_justify="left", expand=False)
    for column in WORKER_COLUMNS:
        table.add_column(column, justify="left" if column == "state" else "right", no_wrap=True)
    for worker in workers:
        table.add_row(
            str(worker["id"]),
            _value(worker.get("slot")),
            _value(worker.get("pid")),
            _value(worker.get("generation")),
            worker["state"],
            duration(worker.get("uptime")),
            _value(worker.get("connectionsOpen")),
            _value(worker.get("connectionsTotal")),
            size(worker.get("rssBytes")),
            _value(worker.get("cpuPercent"), "%"),
            _roundTrip(worker.get("heartbeatRoundTrip")),
        )
    return table


def eventsTable(events: list[dict[str, Any]], count: int) -> Table:
    table = Table(title="last events", title_justify="left", expand=False)
    for column in ("time", "worker", "slot", "event", "reason"):
        table.add_column(column)
    for event in events[-count:]:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(event["time"])),
            str(event["worker"]),
            _value(event.get("slot")),
            event["event"],
            event.get("reason") or "",
        )
    return table


def console() -> Any:
    """
    A console for the status: on a pipe, as wide as the tables need (rich
    would cut them to 80 columns).
    """
    from rich.console import Console

    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=200)


def statusView(document: dict[str, Any], events: int = 10) -> Group:
    """
    Everything in the status, for C{twistcluster status} and C{top}.
    """
    parts: list[Any] = [
        masterHeader(document["master"]),
        listenersTable(document["master"]["listeners"]),
        workersTable(document["workers"]),
    ]
    if document.get("events") and events:
        parts.append(eventsTable(document["events"], events))
    return Group(*parts)
