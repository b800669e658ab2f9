# -*- test-case-name: tests.test_metrics -*-
"""
The master's metrics server (C{--metrics ENDPOINT}), a C{twisted.web} site:

    - C{/metrics}: the cluster's scrape (L{ClusterScrape}), written by
      C{prometheus_client}'s own encoders (the Prometheus text format, or
      OpenMetrics when the scraper asks for it; gzip when it accepts it).
      The resource waits for the workers' answers without a thread: unlike
      C{prometheus_client.twisted.MetricsResource}, which runs the registry
      on the reactor's thread pool and could not wait for AMP answers.
    - C{/healthz}: readiness, 200 while a worker is ready and the master
      neither drains nor stops, else 503; one line either way.
    - C{/livez}: liveness, 200 while the reactor runs (even with every
      worker backing off, so a probe never kills a master that recovers).
"""

from __future__ import annotations

import gzip
from typing import Any

from prometheus_client.exposition import choose_encoder, gzip_accepted
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from .._common.reactors import IEndpointReactor
from .binding import StartupError
from .carried import carriable
from .families import Exposed
from .metrics import ClusterScrape, isReady
from .status import StatusSource


class MetricsResource(Resource):
    """
    C{/metrics}: answered once every worker has answered, or the bound has
    passed.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, scrape: ClusterScrape) -> None:
        super().__init__()
        self._scrape = scrape

    def render_GET(self, request: Request) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda reason: gone.append(True))
        scraped = self._scrape.scrape()
        scraped.addCallback(self._write, request, gone)
        scraped.addErrback(self._failed, request, gone)
        return NOT_DONE_YET

    def _write(self, families: list[Any], request: Request, gone: list[bool]) -> None:
        if gone:
            return
        encoder, contentType = choose_encoder(_header(request, b"accept"))
        output = encoder(Exposed(families))
        if gzip_accepted(_header(request, b"accept-encoding")):
            output = gzip.compress(output)
            request.setHeader(b"content-encoding", b"gzip")
        request.setHeader(b"content-type", contentType.encode("ascii"))
        request.write(output)
        request.finish()

    def _failed(self, reason: Failure, request: Request, gone: list[bool]) -> None:
        self._log.failure("a scrape failed", reason)
        if not gone:
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(f"scrape failed: {reason.getErrorMessage()}\n".encode())
            request.finish()


def _header(request: Request, name: bytes) -> str:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else (value or "")


class HealthResource(Resource):
    """
    C{/healthz}: readiness, for load balancers and Kubernetes.
    """

    isLeaf = True

    def __init__(self, master: StatusSource) -> None:
        super().__init__()
        self._master = master

    def render_GET(self, request: Request) -> bytes:
        supervisor = self._master.supervisor
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        counts = f"{supervisor.readyCount} of {supervisor.size} workers ready"
        if isReady(self._master):
            return f"ready: {counts}\n".encode()
        request.setResponseCode(503)
        if self._master.isStopping():
            return f"{self._master.phase.value}: {counts}\n".encode()
        return f"not ready: {counts}\n".encode()


class LiveResource(Resource):
    """
    C{/livez}: the reactor runs (it answered).
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return b"alive\n"


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        # A scrape every few seconds would fill the master's log.
        pass


def metricsSite(scrape: ClusterScrape, master: StatusSource) -> Site:
    root = Resource()
    root.putChild(b"metrics", MetricsResource(scrape))
    root.putChild(b"healthz", HealthResource(master))
    root.putChild(b"livez", LiveResource())
    site = _QuietSite(root)
    site.noisy = False
    return site


class MetricsServer(Service):
    """
    Serves the metrics site on C{--metrics ENDPOINT}; bound when it starts
    (before any privilege drop), closed after the master has stopped (so
    that C{/healthz} says 503 through a graceful stop).
    """

    _log = Logger()
    name = "metrics"

    def __init__(self, reactor: IEndpointReactor, description: str, site: Site, upgrade: Any = None) -> None:
        """
        @param upgrade: The master's upgrade
            (L{twistcluster._master.upgrade.MasterUpgrade}): a plain TCP or
            UNIX endpoint's socket is carried across it.
        """
        self._reactor = reactor
        self._description = description
        self._site = site
        self._port: Any = None
        self.address: str | None = None
        self._upgrade = upgrade
        if upgrade is not None and carriable(description):
            upgrade.carryListener(self.name, lambda: None if self._port is None else self._port.fileno())

    def startService(self) -> None:
        """
        @raise StartupError: The endpoint cannot be listened on.
        """
        adopted = None if self._upgrade is None else self._upgrade.adoptedListener(self.name)
        result: Any
        if adopted is not None:
            from .resume import adoptListeningPort

            result = adoptListeningPort(self._reactor, adopted, self._site)
        else:
            result = self._listen()
        self._port = result
        host = result.getHost()
        self.address = f"unix:{host.name}" if hasattr(host, "name") else _tcpAddress(host.host, host.port)
        super().startService()
        self._log.info("metrics, health and liveness at {address}", address=self.address)

    def _listen(self) -> Any:
        listened: list[Any] = []
        try:
            endpoint = serverFromString(self._reactor, self._description)
        except (ValueError, TypeError, KeyError) as e:
            raise StartupError(f"--metrics {self._description!r}: {e}") from e
        endpoint.listen(self._site).addBoth(listened.append)
        [result] = listened
        if isinstance(result, Failure):
            raise StartupError(f"--metrics {self._description!r}: {result.getErrorMessage()}")
        return result

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self._port = self._port, None
        return succeed(None) if port is None else maybeDeferred(port.stopListening)

    def abandon(self) -> None:
        if self._port is not None:
            self._port, port = None, self._port
            port.stopListening()


def _tcpAddress(host: str, port: int) -> str:
    return f"tcp6:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"
