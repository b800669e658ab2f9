"""
One worker of a real cluster misbehaves on its control channel while clients
keep making requests to every worker: the master copes with it alone (closes
its channel and replaces it, or refuses what it sent and lets it serve on),
and no client request fails but those the rogue already held.
"""

from __future__ import annotations

import time

from tests._cluster import waitUntil
from tests._rogue import ROGUE_ID, RogueCluster


def test_garbage(cluster, tmp_path):
    """
    Bytes that are not AMP: the master closes the channel (one line), the
    rogue exits (or is killed) and is replaced.
    """
    rogue = RogueCluster(cluster, tmp_path, "garbage")
    with rogue.load() as load:
        rogue.misbehave()
        rogue.c.waitFor(rf"worker {ROGUE_ID} \(pid \d+\) broke the control protocol \(a key of \d+ bytes\)")
        new = rogue.rogueReplaced()
        load.waitForMore(10, by=new)
    assert load.failed() == []
    assert "Traceback" not in rogue.c.output


def test_oversized_box(cluster, tmp_path):
    """
    A box that never ends: the channel is closed once it is longer than any
    box the protocol makes; the master's memory does not follow it.
    """
    rogue = RogueCluster(cluster, tmp_path, "oversized")
    before = rogue.masterResident()
    with rogue.load() as load:
        rogue.misbehave()
        rogue.c.waitFor(rf"worker {ROGUE_ID} \(pid \d+\) broke the control protocol \(.*a box longer than")
        grown = rogue.masterResident() - before
        new = rogue.rogueReplaced()
        load.waitForMore(10, by=new)
    print(f"the master's resident memory grew by {grown >> 10} KiB")
    assert load.failed() == []
    assert grown < 32 << 20, grown


def test_unknown_commands(cluster, tmp_path):
    """
    A thousand unknown commands and one it cannot parse: each answered with
    an error, the log says so twice (once per kind), and the rogue keeps its
    channel and serves on.
    """
    rogue = RogueCluster(cluster, tmp_path, "unknown")
    with rogue.load() as load:
        rogue.misbehave()
        rogue.c.waitFor(rf"rogue worker {ROGUE_ID}: 1000 errors answered")
        rogue.c.waitFor(rf"worker {ROGUE_ID} sent a listening the master could not take")
        load.waitForMore(10, by=ROGUE_ID)
    assert len(rogue.c.matches(rf"worker {ROGUE_ID} sent an unknown command")) == 1
    assert not rogue.c.matches(r"broke the control protocol|exited with")
    assert load.failed(excusing=None) == []


def test_unasked_descriptors(cluster, tmp_path):
    """
    10,000 descriptors sent to the master: each is closed as it arrives
    (the master's descriptor count stays put), and the rogue serves on.
    """
    rogue = RogueCluster(cluster, tmp_path, "descriptors")
    with rogue.load() as load:
        before = rogue.masterDescriptors()
        rogue.misbehave()
        rogue.c.waitFor(rf"rogue worker {ROGUE_ID}: sent 10000 descriptors")
        rogue.c.waitFor(rf"worker {ROGUE_ID} sent descriptors the master did not ask for")
        load.waitForMore(10, by=ROGUE_ID)
    # Once the load has stopped: under load, connections on their way to a
    # worker hold descriptors in the master too (20 more were seen at a
    # load of 12).  Before the fix, 10,000 more stayed open.
    counts: list[int] = []
    try:
        waitUntil(lambda: counts.append(rogue.masterDescriptors()) or counts[-1] <= before + 8, 30, "")
    except AssertionError:
        raise AssertionError(f"the master's descriptors: {before} before, {counts[-1]} 30 s after") from None
    print(f"the master's open descriptors: {before} before, {counts[-1]} after")
    assert not rogue.c.matches(r"broke the control protocol|exited with")
    assert load.failed(excusing=None) == []


def test_endless_message(cluster, tmp_path):
    """
    Chunks of a message that never ends (96 MiB): each refused with an
    error as it arrives, none kept; the rogue keeps its channel and serves.
    """
    rogue = RogueCluster(cluster, tmp_path, "endless-message")
    before = rogue.masterResident()
    with rogue.load() as load:
        rogue.misbehave()
        [said] = rogue.c.waitFor(
            rf"rogue worker {ROGUE_ID}: sent (\d+) bytes of one message; (\d+) chunks refused", timeout=120
        )
        grown = rogue.masterResident() - before
        load.waitForMore(10, by=ROGUE_ID)
    sent, refused = int(said.group(1)), int(said.group(2))
    print(f"{sent} bytes sent, {refused} chunks refused; the master's memory grew by {grown >> 10} KiB")
    assert sent >= 96 << 20
    # All but the first 64 KiB (the command line's bound) were refused.
    assert refused >= sent // (60 * 1024) - 2
    assert grown < 32 << 20, grown
    assert not rogue.c.matches(r"broke the control protocol|exited with")
    assert load.failed(excusing=None) == []


def test_never_acking(cluster, tmp_path):
    """
    A worker that answers its heartbeat but never answers a hand-off: once
    one has waited --worker-timeout, it is aborted (killed), and only then
    do the sockets it sat on go to the other workers, which serve them.
    """
    rogue = RogueCluster(cluster, tmp_path, "no-ack", options=("--worker-timeout", "3"))
    with rogue.load(threads=3) as load:
        started = time.monotonic()
        rogue.misbehave()
        rogue.c.waitFor(rf"worker {ROGUE_ID} \(pid \d+\) is hung \(a hand-off unanswered for 3s\)")
        rogue.c.waitFor(r"\d+ hand-offs in flight to a lost worker go to others")
        new = rogue.rogueReplaced()
        load.waitForMore(10, by=new)
    assert time.monotonic() - started < 60
    # Killed before its sockets were given away.
    lines = rogue.c.output.splitlines()
    exited = next(
        i for i, line in enumerate(lines) if f"worker {ROGUE_ID} (pid" in line and "exited with" in line
    )
    reclaimed = next(i for i, line in enumerate(lines) if "hand-offs in flight to a lost worker" in line)
    assert exited < reclaimed
    assert load.failed(excusing=None) == []


def test_hoarding_lent_sockets_under_reuseport(cluster, tmp_path):
    """
    Under reuseport, a worker that asks for its socket 50 times more and
    keeps every one it is lent, never listening on them: none of them joins
    the port's SO_REUSEPORT group (the master does not listen on what it
    lends; a worker does, when it serves), so every new client is served.
    """
    rogue = RogueCluster(cluster, tmp_path, "lend-hoard", options=("--scheduling", "reuseport"))
    rogue.misbehave()
    rogue.c.waitFor(rf"rogue worker {ROGUE_ID}: hoarding 50 lent sockets")
    with rogue.load(threads=3) as load:
        load.waitForMore(200)
    assert load.failed(excusing=None) == []
    assert set(load.served) == set(rogue.pids)
    assert not rogue.c.matches(r"broke the control protocol|exited with")


def test_listening_at_3000_new_indexes(cluster, tmp_path):
    """
    A worker asking for 3000 more listens on the address the master was
    configured with, each at a new index: every one refused, with an error
    that says why; the master opens nothing for them, and the worker serves
    on.
    """
    rogue = RogueCluster(cluster, tmp_path, "listen-many")
    before = rogue.masterDescriptors()
    with rogue.load() as load:
        rogue.misbehave()
        [line] = rogue.c.waitFor(
            rf"rogue worker {ROGUE_ID}: listened: (\d+) granted, (\d+) refused; first: (.*)$", timeout=120
        )
        load.waitForMore(10, by=ROGUE_ID)
    assert (line.group(1), line.group(2)) == ("0", "3000")
    assert line.group(3) == (
        f"listen number 2 on tcp:127.0.0.1:{rogue.address[1]} is not granted:"
        " the master was configured to listen there once"
    )
    after = rogue.masterDescriptors()
    print(f"the master's open descriptors: {before} before, {after} after")
    assert after <= before + 4
    assert not rogue.c.matches(r"Traceback|broke the control protocol|exited with")
    assert load.failed(excusing=None) == []
