"""
What the master pulls from a worker: chunked replies over AMP (larger than
one AMP value, and bounded), and a registry's metric families as the worker
sends them.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.protocols import amp
from twisted.test.iosim import connectedServerAndClient

from twistcluster._common.messages import CHUNK_SIZE
from twistcluster._common.statistics import ChunkedBytes, CollectMetrics, MetricsTooLarge, TooLarge
from twistcluster._worker.metrics import encodedFamilies, familiesOf


class Echo(amp.Command):
    arguments = [(b"size", amp.Integer())]
    response = [(b"data", ChunkedBytes(300_000))]


class Lying(amp.Command):
    commandName = b"Echo"
    arguments = [(b"size", amp.Integer())]
    response = [(b"data", ChunkedBytes(1 << 30))]


class Server(amp.AMP):
    @Echo.responder
    def echo(self, size: int) -> dict[str, bytes]:
        return {"data": bytes(range(256)) * (size // 256) + b"x" * (size % 256)}


class Client(amp.AMP):
    pass


def _ask(command: type[amp.Command], size: int, serverClass: type[amp.AMP] = Server) -> list:
    client, server, pump = connectedServerAndClient(serverClass, Client)
    results: list = []
    client.callRemote(command, size=size).addBoth(results.append)
    pump.flush()
    return results


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 200_000])
def test_chunked_bytes_of_any_size_in_one_box(size):
    """
    Values far over AMP's 64 KiB limit arrive whole, in one answer.
    """
    [answer] = _ask(Echo, size)
    assert len(answer["data"]) == size
    assert answer["data"] == bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def test_chunked_bytes_bound_on_the_reading_side():
    """
    A peer that sends more than the reader's bound is refused before its
    chunks are joined.
    """

    class Generous(amp.AMP):
        @Lying.responder
        def echo(self, size: int) -> dict[str, bytes]:
            return {"data": b"y" * size}

    client, server, pump = connectedServerAndClient(Generous, Client)
    results: list = []
    client.callRemote(Echo, size=400_000).addBoth(results.append)
    client.callRemote(Echo, size=10).addBoth(results.append)
    pump.flush()
    assert results[0].check(TooLarge)
    # The channel lives on.
    assert results[1] == {"data": b"y" * 10}


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter("app_requests", "Requests served", ["path"], registry=registry)
    requests.labels("/").inc(3)
    Gauge("app_temperature", "Degrees", registry=registry).set(float("nan"))
    Histogram("app_latency_seconds", "Latency", buckets=[0.1, 1.0], registry=registry).observe(0.5)
    return registry


def test_families_of_a_registry():
    """
    Each family travels as name, type, help, unit and samples, NaN and the
    infinities included.
    """
    families = {f[0]: f for f in json.loads(encodedFamilies(1 << 20, _registry()))}
    name, kind, help, unit, samples = families["app_requests"]
    assert (kind, help, unit) == ("counter", "Requests served", "")
    assert ["app_requests_total", {"path": "/"}, 3.0, None] in samples
    assert families["app_temperature"][4][0][2] != families["app_temperature"][4][0][2]  # NaN
    buckets = [s for s in families["app_latency_seconds"][4] if s[0].endswith("_bucket")]
    assert [s[1]["le"] for s in buckets] == ["0.1", "1.0", "+Inf"]
    assert [f[0] for f in familiesOf(_registry())] == list(families)


def test_families_over_the_bound_are_refused():
    with pytest.raises(MetricsTooLarge):
        encodedFamilies(100, _registry())


def test_collect_metrics_command_round_trip():
    """
    CollectMetrics answers the worker's families, bounded as asked.
    """

    class Worker(amp.AMP):
        @CollectMetrics.responder
        def collect(self, maxBytes: int) -> dict[str, bytes]:
            return {"families": encodedFamilies(maxBytes, _registry())}

    client, server, pump = connectedServerAndClient(Worker, Client)
    results: list = []
    client.callRemote(CollectMetrics, maxBytes=1 << 20).addBoth(results.append)
    client.callRemote(CollectMetrics, maxBytes=10).addBoth(results.append)
    pump.flush()
    assert {f[0] for f in json.loads(results[0]["families"])} >= {"app_requests", "app_latency_seconds"}
    assert results[1].check(MetricsTooLarge)
