"""
A worker's output in the master's log: lines of any length at linear cost,
the worker's log events as they were (namespace, level, failure), and
faulthandler's report read for the culprit.
"""

from __future__ import annotations

import signal
import time

from twisted.logger import Logger, LogLevel, eventFromJSON, formatEventAsClassicLogText

from tests._cluster import connect, readLine
from twistcluster._master.faults import FaultReport
from twistcluster._master.output import LineSplitter, asMasterEvent, describeEvent
from twistcluster._worker.logs import eventForMaster

# Unit: lines


def test_lines_whole_and_across_reads():
    lines = LineSplitter(limit=10)
    assert lines.feed(b"ab") == []
    assert lines.feed(b"c\nde\n\nf") == [(b"abc", 0, True), (b"de", 0, True), (b"", 0, True)]
    assert lines.flush() == [(b"f", 0, True)]
    assert lines.flush() == []


def test_a_long_line_in_pieces():
    """
    A line longer than the limit comes out in numbered pieces of the limit's
    size as it arrives, however it is read.
    """
    lines = LineSplitter(limit=4)
    found = []
    for byte in b"0123456789\nok\n":
        found += lines.feed(bytes([byte]))
    assert found == [(b"0123", 1, False), (b"4567", 2, False), (b"89", 3, True), (b"ok", 0, True)]
    assert LineSplitter(limit=4).feed(b"01234567\n") == [(b"0123", 1, False), (b"4567", 2, True)]


def test_a_long_line_costs_linear_time():
    """
    20 MiB in 8 KiB reads (a pipe's) without a newline: a second would be
    very slow for a linear splitter; a quadratic one takes minutes.
    """
    lines = LineSplitter()
    chunk = b"x" * 8192
    started = time.process_time()
    pieces = []
    for _ in range((20 << 20) // len(chunk)):
        pieces += lines.feed(chunk)
    pieces += lines.feed(b"\n")
    assert time.process_time() - started < 1.0
    assert [(len(p), part, ended) for p, part, ended in pieces] == [
        (1 << 20, n, n == 20) for n in range(1, 21)
    ]


# Unit: faulthandler's report

ABORTED = """\
Fatal Python error: Aborted

Thread 0x00007f0a1b2c3700 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 320 in wait
  File "/usr/lib/python3.11/threading.py", line 622 in wait

Current thread 0x00007f0a1c000740 (most recent call first):
  File "/srv/app/slowboot.py", line 12 in <module>
  File "<frozen importlib._bootstrap>", line 241 in _call_with_frames_removed
  File "/srv/twistcluster/_common/factory.py", line 40 in loadFactory

Extension modules: zope.interface._zope_interface_coptimizations (total: 1)
"""


def test_fault_report_names_the_main_threads_innermost_frame():
    report = FaultReport()
    assert [report.feed(line) for line in ABORTED.splitlines()] == [True] * len(ABORTED.splitlines())
    assert report.complete
    assert report.finish("worker 3 was not ready after 2s") == (
        "worker 3 was not ready after 2s; its main thread was at /srv/app/slowboot.py, line 12, in <module>"
    )
    assert report.finish("again") is None


def test_fault_report_of_a_crash():
    report = FaultReport()
    text = ABORTED.replace("Aborted", "Segmentation fault")
    for line in text.splitlines():
        report.feed(line)
    assert report.finish("an older line").startswith("Fatal Python error: Segmentation fault; its main")


def test_fault_report_ends_at_a_foreign_line():
    report = FaultReport()
    assert not report.feed("an ordinary line")
    assert not report.complete
    assert report.feed("Fatal Python error: Aborted")
    assert not report.feed("something else")
    assert report.complete
    assert report.finish(None) == "Fatal Python error: Aborted"


# Unit: events


def _throughTheRelay(emit) -> dict:
    """
    What the master publishes for an event a worker logs with C{emit}.
    """
    captured = []
    log = Logger(namespace="my.app", observer=captured.append)
    emit(log)
    [event] = captured
    return asMasterEvent(eventFromJSON(eventForMaster(event)[1:]), 7)


def test_a_failure_keeps_its_message_and_traceback():
    def emit(log):
        try:
            raise RuntimeError("deliberate")
        except RuntimeError:
            log.failure("handling {what} failed", what="a request")

    event = _throughTheRelay(emit)
    assert event["log_namespace"] == "my.app"
    assert event["log_level"] == LogLevel.critical
    assert event["workerId"] == 7
    text = formatEventAsClassicLogText(event)
    assert "[my.app#critical] [worker 7] handling a request failed" in text
    assert "builtins.RuntimeError: deliberate" in text
    assert "in emit" in text and "test_output.py" in text
    assert describeEvent(event) == "[worker 7] handling a request failed: RuntimeError: deliberate"


def test_an_event_keeps_its_fields():
    event = _throughTheRelay(lambda log: log.warn("{count} of {workerId!r}", count=3, workerId="mine"))
    assert event["log_level"] == LogLevel.warn
    assert event["workerId"] == "mine"
    assert "[my.app#warn] [worker 7] 3 of 'mine'" in formatEventAsClassicLogText(event)


def test_an_event_keeps_its_format_specs():
    """
    A worker's C{{delay:.1f}} is rendered with its spec in the master's log
    (Twisted's flattened copy drops it); a field that could not be written
    as JSON is still rendered from the flattened copy.
    """
    event = _throughTheRelay(lambda log: log.info("next in {delay:.1f}s", delay=0.26871))
    assert "[worker 7] next in 0.3s" in formatEventAsClassicLogText(event)
    event = _throughTheRelay(lambda log: log.info("got {thing!r}", thing=object()))
    assert "[worker 7] got <object object at " in formatEventAsClassicLogText(event)


# Real workers


def test_worker_exception_reaches_the_master_log_intact(cluster):
    """
    A twisted.web resource raising in a worker: the master's log has the
    exception's type, message and traceback, under twisted.web's namespace
    and level, with the worker's id.
    """
    c = cluster("--workers", "1", "--listen", "tcp:0:interface=127.0.0.1", "tests.semanticsapps.boomSite")
    c.waitReady(1)
    with connect(c.address()) as sock:
        sock.sendall(b"GET /boom HTTP/1.0\r\n\r\n")
        assert readLine(sock).startswith("HTTP/1.0 500")
    c.waitFor(r"builtins\.RuntimeError: deliberate")
    assert c.matches(r"\[twisted\.web\.server\.Request#critical\] \[worker 1\]")
    assert c.matches(r'semanticsapps\.py", line \d+, in render_GET')
    assert not c.matches("unpersistable")


def test_long_output_line_does_not_stall_the_master(cluster):
    """
    A worker prints a 20 MiB line: the master logs it in 1 MiB pieces and
    keeps accepting meanwhile.
    """
    c = cluster(
        "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "tests.semanticsapps.PrinterFactory"
    )
    c.waitReady(2)
    address = c.address()
    with connect(address) as sock:
        readLine(sock)
        sock.sendall(b"print 20\n")
        assert readLine(sock) == "printing\n"
    latencies = []
    deadline = time.monotonic() + 60
    while not c.matches(r"\[long line, part 20, end\]") and time.monotonic() < deadline:
        started = time.monotonic()
        with connect(address, timeout=30) as sock:
            assert readLine(sock).startswith("worker=")
        latencies.append(time.monotonic() - started)
    c.waitFor(r"\[long line, part 20, end\]", timeout=1)
    parts = c.matches(r"\[worker \d\] \[long line, part (\d+)(, end)?\] (x*)$")
    assert [(int(m.group(1)), len(m.group(3))) for m in parts] == [(n, 1 << 20) for n in range(1, 21)]
    assert latencies and max(latencies) < 2.0, latencies
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


def test_boot_timeout_names_where_the_worker_was_stuck(cluster):
    """
    A worker stuck importing its factory: the master gives up naming the
    timeout and the main thread's innermost frame, not faulthandler's last
    line.
    """
    c = cluster(
        "--workers",
        "1",
        "--boot-timeout",
        "2",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "tests.slowboot.SlowFactory",
    )
    assert c.wait(timeout=90) != 0
    found = c.waitFor(r"the last one said: (.*)$")[-1].group(1)
    assert found.startswith("worker ") and "was not ready after 2s" in found, found
    assert "slowboot.py, line 12, in <module>" in found, found
    assert c.leftovers() == []


def test_the_log_names_things_in_the_users_words(cluster):
    """
    The master's and workers' lines name listens as the user wrote them or
    as bound, never by twistcluster's internals: no factory class of ours,
    no Node handle key (C{127.0.0.1:0:4:-1:0}), no bare C{Factory} (issue
    13, item 10).
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "tests.clusterapps.WhoAmIFactory")
    c.waitReady(2)
    port = c.address()[1]
    c.waitFor(rf"worker \d+ serving \S+ on tcp:127\.0\.0\.1:{port} ", 2)
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    listening = rf"listening on tcp:0:interface=127\.0\.0\.1 at tcp:127\.0\.0\.1:{port} \(scheduling rr\)"
    assert c.matches(listening)
    assert c.matches(rf"twistcluster master starting on {port}$")
    assert c.matches(r"twistcluster control socket starting on ")
    for internal in (r"_SilentFactory", r"\d:-?\d+:-?\d+:\d+\b", r"\] Factory starting on", r"\bkeys?\b"):
        assert not c.matches(internal), (internal, c.matches(internal)[0].string)
