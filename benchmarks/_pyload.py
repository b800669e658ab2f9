"""
A tiny load generator in Python (asyncio), for when C{wrk} is not installed:
the smoke test uses it so that C{make test} on CI exercises the whole
harness.  Its figures measure this client as much as the server; use
C{wrk} for real numbers.
"""

from __future__ import annotations

import asyncio
import time

from ._load import LoadResult, LoadSpec, percentile

_TIMEOUT = 5.0


def _request(spec: LoadSpec) -> bytes:
    connection = b"close" if spec.close else b"keep-alive"
    return (
        b"GET " + spec.path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: " + connection + b"\r\n\r\n"
    )


async def _readResponse(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _shortConnections(spec: LoadSpec, deadline: float, tally: _Tally) -> None:
    request = _request(spec)
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", spec.port)
        except OSError:
            tally.error("connect")
            await asyncio.sleep(0.01)
            continue
        started = time.monotonic()
        try:
            writer.write(request)
            await asyncio.wait_for(_readResponse(reader), _TIMEOUT)
            tally.latencies.append(time.monotonic() - started)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            tally.error("read")
        except TimeoutError:
            tally.error("timeout")
        finally:
            writer.close()


async def _keepAlive(spec: LoadSpec, deadline: float, tally: _Tally) -> None:
    request = _request(spec)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", spec.port)
    except OSError:
        tally.error("connect")
        return
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            writer.write(request)
            await asyncio.wait_for(_readResponse(reader), _TIMEOUT)
            tally.latencies.append(time.monotonic() - started)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        tally.error("read")
    except TimeoutError:
        tally.error("timeout")
    finally:
        writer.close()


async def _run(spec: LoadSpec) -> LoadResult:
    tally = _Tally()
    started = time.monotonic()
    deadline = started + spec.duration
    client = _shortConnections if spec.close else _keepAlive
    await asyncio.gather(*(client(spec, deadline, tally) for _ in range(spec.connections)))
    seconds = time.monotonic() - started
    latencies = sorted(tally.latencies)
    return LoadResult(
        requests=len(latencies),
        seconds=seconds,
        p50=percentile(latencies, 0.50) * 1000,
        p99=percentile(latencies, 0.99) * 1000,
        errors=tally.errors,
    )


def runPythonLoad(spec: LoadSpec) -> LoadResult:
    """
    Apply C{spec} for C{spec.duration} seconds from this process.
    """
    return asyncio.run(_run(spec))
