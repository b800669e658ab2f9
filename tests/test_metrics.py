"""
--metrics with real masters and workers: /metrics parsed as Prometheus and
OpenMetrics scrapers parse it, every worker's own registry merged under its
slot, a stopped worker left out within the bound, and /healthz and /livez.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openMetricsFamilies
from prometheus_client.parser import text_string_to_metric_families

from tests._cluster import connect, readLine, stopped, waitUntil, whoServes
from tests.test_ctl import status
from twistcluster._master.metrics import METRICS_TIMEOUT

LOCAL = "tcp:0:interface=127.0.0.1"
METRICS = "tcp:0:interface=127.0.0.1"
COUNTING = "tests.clusterapps.CountingFactory"


def get(c, path: str, accept: str | None = None) -> tuple[int, str, str]:
    """
    GET C{path} from cluster C{c}'s metrics server: status, content type,
    body.
    """
    host, port = status(c)["master"]["metrics"].split(":")[1:]
    request = urllib.request.Request(f"http://{host}:{port}{path}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def samples(text: str, name: str, parse=text_string_to_metric_families) -> dict[tuple, float]:
    """
    The samples named C{name} in an exposition, by their sorted labels.
    """
    found = {}
    for family in parse(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def byWorker(found: dict[tuple, float]) -> dict[str, float]:
    return {dict(labels)["worker"]: value for labels, value in found.items()}


def test_a_scrape_merges_every_worker_registry(cluster):
    """
    A user Counter incremented once per connection in each of 2 workers:
    its samples, one per slot, add up to the connections made; the cluster's
    own families are there; both parsers read it, without a duplicate family.
    """
    c = cluster("--workers", "2", "--listen", LOCAL, "--metrics", METRICS, COUNTING)
    c.waitReady(2)
    address = c.address()
    served = [whoServes(address)[1] for _ in range(10)]
    assert len(set(served)) == 2
    code, contentType, text = get(c, "/metrics")
    assert code == 200 and contentType.startswith("text/plain; version=0.0.4")
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    counted = byWorker(samples(text, "app_connections_total"))
    assert set(counted) == {"0", "1"}
    assert counted["0"] + counted["1"] == 10 and counted["0"] and counted["1"]
    assert byWorker(samples(text, "twistcluster_worker_connections_accepted_total")) == {
        "0": counted["0"],
        "1": counted["1"],
    }
    assert samples(text, "twistcluster_workers")[(("state", "listening"),)] == 2
    assert samples(text, "twistcluster_connections_accepted_total") == {
        (("listener", f"tcp:127.0.0.1:{address[1]}"),): 10.0
    }
    assert set(byWorker(samples(text, "process_resident_memory_bytes"))) == {"master", "0", "1"}
    assert set(byWorker(samples(text, "twistcluster_process_cpu_seconds_total"))) == {"master", "0", "1"}

    code, contentType, text = get(c, "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert code == 200 and contentType.startswith("application/openmetrics-text")
    families = list(openMetricsFamilies(text))
    assert len({f.name for f in families}) == len(families)
    counted = byWorker(samples(text, "app_connections_total", openMetricsFamilies))
    assert counted["0"] + counted["1"] == 10


def test_a_replaced_worker_keeps_its_slot_series(cluster):
    """
    After kill -9, the new worker's series go on under the same slot label:
    no new label value, and a crash counted.
    """
    c = cluster("--workers", "2", "--listen", LOCAL, "--metrics", METRICS, COUNTING)
    c.waitReady(2)
    victim = {w["slot"]: w for w in status(c)["workers"]}[0]
    os.kill(victim["pid"], signal.SIGKILL)
    waitUntil(
        lambda: [w["slot"] for w in status(c)["workers"] if w["state"] == "listening"] in ([0, 1], [1, 0]),
        30,
        "the replacement",
    )
    address = c.address()
    for _ in range(6):
        whoServes(address)
    text = get(c, "/metrics")[2]
    counted = byWorker(samples(text, "app_connections_total"))
    assert set(counted) == {"0", "1"}
    info = samples(text, "twistcluster_worker_info")
    assert sorted(dict(labels)["worker"] for labels in info) == ["0", "1"]
    [newZero] = [dict(labels) for labels in info if dict(labels)["worker"] == "0"]
    assert int(newZero["pid"]) != victim["pid"]
    assert samples(text, "twistcluster_restarts_total")[(("cause", "crash"),)] == 1


def test_a_stopped_worker_delays_a_scrape_by_the_bound_at_most(cluster):
    """
    A SIGSTOPped worker: the scrape answers within the bound (and some
    slack for a busy machine), without that worker's series, and counts the
    failure under its slot.
    """
    c = cluster("--workers", "2", "--listen", LOCAL, "--metrics", METRICS, COUNTING)
    c.waitReady(2)
    address = c.address()
    for _ in range(4):
        whoServes(address)
    frozen = {w["slot"]: w for w in status(c)["workers"]}[1]
    with stopped(frozen["pid"]):
        started = time.monotonic()
        code, _, text = get(c, "/metrics")
        took = time.monotonic() - started
    assert code == 200
    assert METRICS_TIMEOUT * 0.9 <= took < METRICS_TIMEOUT + 3
    assert set(byWorker(samples(text, "app_connections_total"))) == {"0"}
    assert byWorker(samples(text, "twistcluster_worker_scrape_failures_total")) == {"1": 1.0}
    assert set(byWorker(samples(text, "twistcluster_process_resident_memory_bytes"))) == {"master", "0", "1"}
    # Back: in the next scrape again.
    waitUntil(
        lambda: set(byWorker(samples(get(c, "/metrics")[2], "app_connections_total"))) == {"0", "1"},
        30,
        "the worker back in the scrape",
    )


def test_health_during_a_graceful_stop(cluster):
    """
    /healthz: 200 with a worker ready; 503 through a graceful stop, while a
    worker still finishes a connection; /livez 200 all along.
    """
    c = cluster(
        "--workers", "1", "--listen", LOCAL, "--metrics", METRICS, "--shutdown-timeout", "30", COUNTING
    )
    c.waitReady(1)
    assert get(c, "/healthz") == (200, "text/plain; charset=utf-8", "ready: 1 of 1 workers ready\n")
    assert get(c, "/livez")[:2] == (200, "text/plain; charset=utf-8")
    base = status(c)["master"]["metrics"]
    held = connect(c.address())
    assert readLine(held).startswith("worker=")
    c.signal(signal.SIGTERM)
    c.waitFor(r"no longer accepting")
    host, port = base.split(":")[1:]

    def fetch(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    code, body = fetch("/healthz")
    assert (code, body.split(":")[0]) == (503, "stopping")
    assert body.endswith(" of 1 workers ready\n") and body.count("\n") == 1
    assert fetch("/livez") == (200, "alive\n")
    # The worker is still finishing the held connection.
    held.sendall(b"still there\n")
    assert readLine(held) == "still there\n"
    held.close()
    assert c.wait() == 0


def test_bad_metrics_endpoints(cluster):
    """
    A malformed endpoint: one line, exit 64; one in use: one line, exit 1;
    nothing left behind either way.
    """
    bad = cluster("--workers", "1", "--listen", LOCAL, "--metrics", "tcp:notaport", COUNTING)
    assert bad.wait() == 64
    assert bad.lines[-1].startswith("twist cluster: error: --metrics 'tcp:notaport': ")
    first = cluster("--workers", "1", "--listen", LOCAL, "--metrics", METRICS, COUNTING)
    first.waitReady(1)
    port = status(first)["master"]["metrics"].rsplit(":", 1)[1]
    taken = cluster(
        "--workers", "1", "--listen", LOCAL, "--metrics", f"tcp:{port}:interface=127.0.0.1", COUNTING
    )
    assert taken.wait() == 1
    assert taken.lines[-1].startswith(f"twist cluster: error: --metrics 'tcp:{port}:interface=127.0.0.1': ")
    assert taken.leftovers() == [] and not os.path.exists(taken.controlPath)


def test_health_turns_503_before_the_listeners_close():
    """
    In the master's graceful stop, /healthz says 503 by the time the first
    listener is told to stop accepting (a balancer's next check sees it).
    """
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock
    from twisted.web.test.requesthelper import DummyRequest

    from twistcluster._master.metricsweb import HealthResource
    from twistcluster._master.service import Master

    master = Master(Clock(), [], [], 1)
    health = HealthResource(master)

    def check() -> int:
        request = DummyRequest([b""])
        health.render_GET(request)
        return request.responseCode or 200

    seen: list[int] = []

    class Listener:
        def stopAccepting(self):
            seen.append(check())
            return succeed(None)

        def whenIdle(self):
            return succeed(None)

        def closeWaiting(self):
            pass

    class Listeners(list):
        def discard(self, handle):
            self.remove(handle)

    class Workers:
        readyCount, size, workers = 1, 1, {}

        def halt(self):
            pass

    master.handles = Listeners([Listener()])
    master.supervisor = Workers()
    assert check() == 200
    master.stopService()
    assert seen == [503]


def test_families_merge_by_name_and_conflicts_are_left_out():
    """
    Families of one name from two processes merge, each sample labelled
    with its process; another type under that name, a name another family
    writes, or a cluster family's name, is left out and counted; a worker
    label of the application's own becomes exported_worker.
    """
    from twistcluster._master.families import FamilyMerger
    from twistcluster._master.metrics import RESERVED

    merger = FamilyMerger(RESERVED)
    merger.add(
        [["requests", "counter", "Requests", "", [["requests_total", {"worker": "w"}, 2.0, None]]]], "0"
    )
    merger.add(
        [
            ["requests", "counter", "Other help", "", [["requests_total", {}, 3.0, None]]],
            ["requests_total", "gauge", "Clashes with the counter's samples", "", []],
            ["temperature", "gauge", "Degrees", "", [["temperature", {}, 20.0, None]]],
        ],
        "1",
    )
    merger.add([["temperature", "counter", "Another type", "", []]], "2")
    merger.add([["twistcluster_workers", "gauge", "Ours", "", []]], "3")
    families = {f.name: f for f in merger.families()}
    assert set(families) == {"requests", "temperature"}
    assert [(s.labels, s.value) for s in families["requests"].samples] == [
        ({"exported_worker": "w", "worker": "0"}, 2.0),
        ({"worker": "1"}, 3.0),
    ]
    assert families["requests"].documentation == "Requests"
    assert merger.conflicts == {"1": 1, "2": 1, "3": 1}
