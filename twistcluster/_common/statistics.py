# -*- test-case-name: tests.test_statistics -*-
"""
What the master pulls from a worker when an operator asks (C{twistcluster
status}, a Prometheus scrape): its connection counts, and the metric
families of its own C{prometheus_client} registry.

Nothing is pushed: a worker's statistics cost it nothing until they are
asked for, and a connection costs it one integer increment.

A registry's families can be far larger than one AMP value (64 KiB), so
L{ChunkedBytes} spreads their JSON over several keys of one box, cut as
user messages are (L{twistcluster._common.messages.CHUNK_SIZE}), and both
ends bound its size: the worker refuses to send more than the master asked
for (L{MetricsTooLarge}), and the master refuses to read more than
L{MAX_METRICS_BYTES}.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import amp

from .messages import CHUNK_SIZE


class TooLarge(ValueError):
    """
    A chunked value is larger than its bound.
    """


class ChunkedBytes(amp.Argument):
    """
    Bytes of any length up to C{limit} in one AMP box: the key itself holds
    the number of chunks, and C{key.0}, C{key.1}, ... hold the chunks (each
    under AMP's 64 KiB value limit).

    @ivar limit: The most bytes read back; a box announcing more is refused
        (L{TooLarge}) before its chunks are joined.
    """

    def __init__(self, limit: int, optional: bool = False) -> None:
        super().__init__(optional)
        self.limit = limit

    def toBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        # Not checked here: a responder's answer that fails to serialize
        # makes AMP drop the whole channel.  The sender keeps to its bound
        # before it answers (L{MetricsTooLarge}); the reader checks.
        data = objects.pop(_identifier(name))
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        strings[name] = b"%d" % len(chunks)
        for index, chunk in enumerate(chunks):
            strings[b"%s.%d" % (name, index)] = chunk

    def fromBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        count = int(strings.pop(name))
        if count < 0 or (count - 1) * CHUNK_SIZE >= self.limit:
            raise TooLarge(f"{count} chunks, over the bound of {self.limit} bytes")
        data = b"".join(strings.pop(b"%s.%d" % (name, index)) for index in range(count))
        if len(data) > self.limit:
            raise TooLarge(f"{len(data)} bytes, over the bound of {self.limit}")
        objects[_identifier(name)] = data


def _identifier(name: bytes) -> str:
    return name.decode("ascii")


class MetricsTooLarge(Exception):
    """
    A worker's registry does not fit in the bound the master gave.
    """


class MetricsUnavailable(Exception):
    """
    A worker could not collect its registry (a collector of its own raised).
    """


#: The most bytes of metric families one worker may send for one scrape
#: (about 50,000 samples): a runaway label set in one worker costs that
#: worker's series, never the master's memory.
MAX_METRICS_BYTES = 8 << 20


class WorkerStatistics(amp.Command):
    """
    M→W: how many connections the worker has open now, and how many it
    has taken since it started (every policy: the worker counts what its
    own ports serve).
    """

    commandName = b"workerStatistics"
    arguments = []
    response = [(b"connectionsOpen", amp.Integer()), (b"connectionsTotal", amp.Integer())]


class CollectMetrics(amp.Command):
    """
    M→W, at scrape time: every metric family of the worker's default
    C{prometheus_client} registry, as a list of C{[name, type, help, unit,
    samples]} with each sample C{[name, labels, value, timestamp or null]},
    in JSON (with C{NaN} and the infinities, which samples use).  At most
    C{maxBytes} bytes are sent.
    """

    commandName = b"collectMetrics"
    arguments = [(b"maxBytes", amp.Integer())]
    response = [(b"families", ChunkedBytes(MAX_METRICS_BYTES))]
    errors = {MetricsTooLarge: b"METRICS_TOO_LARGE", MetricsUnavailable: b"METRICS_UNAVAILABLE"}
