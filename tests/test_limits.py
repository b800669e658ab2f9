"""
Limits a worker cannot talk the API's primary past: listens at new indexes
(Node's semantics, up to a cap) and the size of a user message.  (The
command line's: tests.test_rogue.)
"""

from __future__ import annotations

import os

import pytest_twisted

from twistcluster._master.handles import MAX_LISTENS


def openDescriptors(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest_twisted.inlineCallbacks
def test_primary_listens_up_to_a_cap(primary):
    """
    The API's primary gives each new index of a worker's listens a socket
    of its own, as Node does, up to MAX_LISTENS; beyond, the listen fails
    with a clear error.
    """
    before = openDescriptors()
    primary.setupPrimary(args=["listenMany", str(MAX_LISTENS + 72)])
    worker = primary.fork()
    report = yield primary.recorder.message(worker, "listenedMany")
    assert (report["granted"], report["refused"]) == (MAX_LISTENS, 72)
    assert f"the most it will ({MAX_LISTENS})" in report["error"]
    # One socket per granted listen, and the worker's own few.
    assert openDescriptors() <= before + MAX_LISTENS + 10


@pytest_twisted.inlineCallbacks
def test_primary_refuses_a_message_too_large(primary):
    """
    A message longer than settings['maxMessageSize'] fails in the worker
    with MessageTooLarge; the channel stays up, and the next message
    arrives.  (Node's 800 KB message fits the default: test_node_api.)
    """
    primary.setupPrimary(args=["sendBig", "800000"], maxMessageSize=100_000)
    worker = primary.fork()
    report = yield primary.recorder.message(worker, "sentBig")
    assert report["big"].startswith("MessageTooLarge: ")
    assert report["small"] is None
    yield primary.recorder.message(worker, "small")
    assert worker.isConnected()
    messages = [args[1] for name, args in primary.recorder.events if name == "message"]
    assert not [m for m in messages if "payload" in m]
