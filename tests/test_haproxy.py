"""
Many hosts behind a real HAProxy: twistcluster masters on loopback ports,
each standing for a host, behind the example configuration
(examples/deploy/haproxy.cfg) with short check intervals, under continuous
load from a real client.  Skipped where HAProxy is not installed (.ci/run
installs Debian's package).
"""

from __future__ import annotations

import os
import signal
import time

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


def metricsPort(c: Cluster) -> int:
    return int(c.waitFor(r"metrics, health and liveness at \S*:(\d+)$")[0].group(1))


#: A server HAProxy sends to, as C{show stat} says.
UP = "UP"


def hostsBehindHAProxy(cluster, haproxy, *options: str) -> tuple[dict[str, Cluster], HAProxy]:
    """
    Two hosts of 2 workers, a under rr and b under none, each with its agent
    and its metrics (/healthz, for health checks) on loopback ports, behind HAProxy
    with the example's checks; once HAProxy has both up at full weight.
    """
    hosts = {
        name: startHost(
            cluster, name, "--scheduling", policy, "--metrics", LOOPBACK, "--agent", LOOPBACK, *options
        )
        for name, policy in (("a", "rr"), ("b", "none"))
    }
    servers = []
    for name, host in hosts.items():
        host.waitReady(2)
        port = host.address("haproxy:tcp:0:interface=127.0.0.1")[1]
        servers.append(Server(name, port, checkPort=metricsPort(host), agentPort=agentPort(host)))
    proxy = haproxy(exampleConfig(servers))
    proxy.waitServers(
        lambda s: all(row["status"] == UP and row["weight"] == "100" for row in s.values()),
        "both hosts up at full weight",
    )
    return hosts, proxy


def report(what: str, outcomes) -> None:
    failed = [o for o in outcomes if not o.ok]
    print(f"{what}: {len(outcomes)} requests, {len(failed)} failed, served by {dict(shares(outcomes))}")


def test_drain_stop(cluster, haproxy):
    """
    Under continuous load, host a is stopped with TERM and --drain-delay 2:
    HAProxy takes it out (agent drain, and /healthz 503) while
    it still accepts, it stops gracefully (exit 0), and not one request
    fails.
    """
    hosts, proxy = hostsBehindHAProxy(cluster, haproxy, "--drain-delay", "2")
    load = Load(proxy.frontend, clients=4, source=CLIENT)
    try:
        load.waitFor(60)
        hosts["a"].signal(signal.SIGTERM)
        proxy.waitServers(lambda s: s["a"]["status"] != UP or s["a"]["weight"] == "0", "a taken out")
        assert hosts["a"].wait(60) == 0
        exited = time.monotonic()
        load.waitFor(60)
    finally:
        outcomes = load.stop()
    report("TERM with --drain-delay 2", outcomes)
    assert [o.error for o in outcomes if not o.ok] == []
    assert shares(outcomes)["a"] > 0
    assert {o.host for o in outcomes if o.started > exited} == {"b"}
    assertClientAddresses(outcomes)
    assert hosts["a"].matches(r"drain delay over: stopping gracefully")


def test_workers_killed(cluster, haproxy):
    """
    Under continuous load, both workers of host a are killed at once: not one
    request started after the kill fails (the master's backlog holds them
    until the replacements are ready; HAProxy sends the rest to b while a's
    agent says down); the ones in flight on the killed workers are counted
    apart.
    """
    hosts, proxy = hostsBehindHAProxy(cluster, haproxy)
    pids = hosts["a"].waitReady(2)
    load = Load(proxy.frontend, clients=4, source=CLIENT)
    try:
        load.waitFor(60)
        killed = time.monotonic()
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        hosts["a"].waitReady(4, timeout=60)
        proxy.waitServers(lambda s: s["a"]["status"] == UP and s["a"]["weight"] == "100", "a back")
        load.waitFor(60)
    finally:
        outcomes = load.stop()
    before = [o for o in outcomes if o.started <= killed]
    after = [o for o in outcomes if o.started > killed]
    report("in flight at the kill", [o for o in before if o.ended > killed])
    report("started after the kill", after)
    assert [o.error for o in after if not o.ok] == []
    assert {o.host for o in after} == {"a", "b"}
    assertClientAddresses(outcomes)
    # Connections the killed workers had served but not acknowledged are not
    # bounced from worker to worker, each logging a traceback.
    assert "could not serve a connection" not in hosts["a"].output


def test_scaled_down_under_load(cluster, haproxy):
    """
    With the example's checks, under continuous load: host a scaled from 2
    workers to 1 (TTOU) gets weight 50 (b keeps 100), its share of the
    requests drops from about 1/2 to about 1/3, and none fails.
    """
    hosts, proxy = hostsBehindHAProxy(cluster, haproxy)
    load = Load(proxy.frontend, clients=4, source=CLIENT)
    try:
        load.waitFor(90)
        hosts["a"].signal(signal.SIGTTOU)
        proxy.waitServers(lambda s: s["a"]["weight"] == "50", "the agent to halve a's weight")
        scaled = time.monotonic()
        load.waitFor(150)
    finally:
        outcomes = load.stop()
    before = [o for o in outcomes if o.ended < scaled]
    after = [o for o in outcomes if o.started > scaled]
    report("2 workers each", before)
    report("a scaled to 1", after)
    assert [o.error for o in outcomes if not o.ok] == []
    assert proxy.servers()["b"]["weight"] == "100"
    assert 0.4 <= shares(before)["a"] / len(before) <= 0.6
    assert 0.25 <= shares(after)["a"] / len(after) <= 0.42
    assertClientAddresses(outcomes)


def test_host_upgraded(cluster, haproxy):
    """
    One host's master upgraded (USR2) under continuous load: not one request
    fails, and the host serves before and after (its agent and health
    endpoints were carried across the exec with its listening socket).
    """
    hosts, proxy = hostsBehindHAProxy(cluster, haproxy)
    load = Load(proxy.frontend, clients=4, source=CLIENT)
    try:
        load.waitFor(60)
        hosts["a"].signal(signal.SIGUSR2)
        hosts["a"].waitFor(r"upgrade done: every process runs", timeout=120)
        done = time.monotonic()
        proxy.waitServers(lambda s: s["a"]["status"] == UP and s["a"]["weight"] == "100", "a up again")
        load.waitFor(120)
    finally:
        outcomes = load.stop()
    report("USR2 (the master upgrade)", outcomes)
    assert [o.error for o in outcomes if not o.ok] == []
    assert {o.host for o in outcomes if o.ended < done} >= {"a"}
    assert "a" in {o.host for o in outcomes if o.started > done}
    assertClientAddresses(outcomes)
