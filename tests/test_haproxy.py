"""
Many hosts behind a real HAProxy: twistcluster masters on loopback ports,
each standing for a host, behind the example configuration
(examples/deploy/haproxy.cfg) with short check intervals, under continuous
load from a real client.  Skipped where HAProxy is not installed (.ci/run
installs Debian's package).
"""

from __future__ import annotations

import signal

import pytest

from tests._cluster import Cluster
from tests._haproxy import HAProxy, Server, exampleConfig, haproxyPath
from tests._load import Load, request, shares

pytestmark = pytest.mark.skipif(
    haproxyPath() is None, reason="haproxy is not installed (Debian: apt-get install haproxy)"
)

LOOPBACK = "tcp:0:interface=127.0.0.1"
#: Where the load's connections come from: not HAProxy's own address, so an
#: application that saw HAProxy instead of the client would be caught.
CLIENT = "127.0.0.2"


@pytest.fixture
def haproxy():
    """
    Start HAProxy with a configuration; killed at teardown, its log shown if
    the test failed.
    """
    started: list[HAProxy] = []

    def start(config: str) -> HAProxy:
        proxy = HAProxy(config)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        print(f"--- haproxy log\n{proxy.log[-20000:]}")
        proxy.close()


def startHost(cluster, name: str, *options: str, app: str = "tests.hostapps.site", workers: int = 2):
    """
    A master standing for host C{name}: its C{haproxy:} listen on a loopback
    port, and the given options.
    """
    return cluster(
        "--workers",
        str(workers),
        "--listen",
        "haproxy:tcp:0:interface=127.0.0.1",
        *options,
        app,
        env={"TEST_HOST": name},
    )


def agentPort(c: Cluster) -> int:
    return int(c.waitFor(r"agent checks on \S+ at [\d.]+:(\d+)")[0].group(1))


def assertClientAddresses(outcomes) -> None:
    """
    Every answered request's application saw the client's own address (from
    the PROXY header), not HAProxy's.
    """
    answered = [o for o in outcomes if o.ok]
    assert answered
    wrong = [(o.client, o.seen) for o in answered if o.seen != o.client]
    assert not wrong, f"{len(wrong)} of {len(answered)} saw another address, e.g. {wrong[:3]}"


@pytest.mark.parametrize("policy", ["rr", "none"])
@pytest.mark.parametrize("app", ["tests.hostapps.site", "tests.hostapps.plain"])
def test_client_address(cluster, haproxy, policy, app):
    """
    Through HAProxy's send-proxy-v2, a twisted.web site's
    request.getClientAddress() and a plain protocol's transport.getPeer()
    give the client's address, from every worker.
    """
    host = startHost(cluster, "a", "--scheduling", policy, app=app)
    host.waitReady(2)
    proxy = haproxy(exampleConfig([Server("a", host.address()[1])]))
    payload = b"GET / HTTP/1.0\r\n\r\n" if app.endswith("site") else b"hello\n"
    load = Load(proxy.frontend, clients=2, source=CLIENT, payload=payload)
    try:
        load.waitFor(40)
    finally:
        outcomes = load.stop()
    assert [o.error for o in outcomes if not o.ok] == []
    assertClientAddresses(outcomes)
    assert {o.worker for o in outcomes} == {"1", "2"}


def test_agent_weight(cluster, haproxy):
    """
    Two hosts of 2 workers; one scaled to 1 (TTOU): HAProxy's weight for it
    drops from 100 to 50 through the agent, and its share of the requests
    from 1/2 to 1/3.
    """
    hosts = {name: startHost(cluster, name, "--agent", LOOPBACK) for name in ("a", "b")}
    servers = []
    for name, host in hosts.items():
        host.waitReady(2)
        servers.append(Server(name, host.address()[1], agentPort=agentPort(host)))
    proxy = haproxy(exampleConfig(servers))
    proxy.waitServers(lambda s: [s["a"]["weight"], s["b"]["weight"]] == ["100", "100"], "full weights")

    def share(requests: int) -> float:
        outcomes = [request(proxy.frontend, CLIENT, 20, b"GET / HTTP/1.0\r\n\r\n") for _ in range(requests)]
        assert [o.error for o in outcomes if not o.ok] == []
        assertClientAddresses(outcomes)
        return shares(outcomes)["a"] / requests

    assert 0.4 <= share(60) <= 0.6
    hosts["a"].signal(signal.SIGTTOU)
    proxy.waitServers(lambda s: s["a"]["weight"] == "50", "the agent to halve a's weight")
    assert proxy.servers()["b"]["weight"] == "100"
    assert 0.25 <= share(90) <= 0.42
