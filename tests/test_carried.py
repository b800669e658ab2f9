"""
The state a master carries across the exec of an upgrade: its JSON form in
a memfd, read back as it was written; a state of another format, or no
state at all, is refused with the reason.
"""

from __future__ import annotations

import json
import os

import pytest

from twistcluster._master.carried import (
    CarriedHandle,
    CarriedState,
    CarriedSupervisor,
    CarriedWorker,
    Launch,
    RunSpec,
    UnreadableState,
    carriable,
    readState,
    writeState,
)


def aState() -> CarriedState:
    return CarriedState(
        "0.1.0",
        2,
        [
            CarriedHandle("127.0.0.1:0:4:-1:0", {"kind": "tcp"}, "least-conn", 7, [1, 2], [1], {1: 3}),
            CarriedHandle("::0:6:-1:0", {"kind": "tcp"}, "none", 8, [2], balanceFD=9, balanceSlots={2: 1}),
        ],
        [
            CarriedWorker(
                1, 101, 0, 3, "listening", True, 10, {1: 11, 2: 12}, "AAE=", 4, {2: ("cGFydA==", 1)}
            ),
            CarriedWorker(2, 102, None, 3, "disconnected", False, -1, {1: 13}, killIn=2.5, exitStatus=256),
        ],
        CarriedSupervisor(2, 3, 9, {"crash": 1}, [1], [2], []),
        Launch(["/srv/app/current/bin/twist", "cluster"], "/srv/app/current", {"PATH": "/bin"}),
        RunSpec(
            "/srv/app/releases/1/bin/python",
            ["-X", "dev"],
            ["twist"],
            "/srv/app/releases/1",
            module="twisted",
        ),
        {"control": 14},
        [15],
        [1],
    )


def test_a_state_reads_back_as_written() -> None:
    state = aState()
    fd = writeState(state)
    try:
        assert not os.get_inheritable(fd)
        assert readState(fd) == state
        # Read without moving or closing it: the old code's way back.
        assert readState(fd) == state
    finally:
        os.close(fd)


def test_every_descriptor_it_names() -> None:
    assert sorted(aState().descriptors()) == [7, 8, 9, 10, 11, 12, 13, 14, 15]


@pytest.mark.parametrize(
    "content, reason",
    [
        (
            json.dumps({**aState().toJSON(), "format": 99}).encode(),
            "the state is format 99; this master reads 1",
        ),
        (b"not json", "cannot read the upgrade's state"),
        (json.dumps({"format": 1}).encode(), "cannot read the upgrade's state"),
    ],
)
def test_a_state_it_cannot_read(content: bytes, reason: str) -> None:
    fd = os.memfd_create("test")
    try:
        os.write(fd, content)
        with pytest.raises(UnreadableState, match=reason):
            readState(fd)
    finally:
        os.close(fd)


def test_which_listeners_are_carried() -> None:
    assert carriable("tcp:0") and carriable("tcp6:9000:interface=\\:\\:1") and carriable("unix:/run/x.sock")
    assert not carriable("ssl:8443:privateKey=key.pem") and not carriable("systemd:domain=INET:index=0")
