# -*- test-case-name: tests.test_output -*-
"""
Log events read back from Twisted's JSON log (a worker's, relayed by the
master; the master's, read by L{twistcluster.testing}).
"""

from __future__ import annotations

import string
from typing import Any


def fromFields(event: dict[str, Any]) -> dict[str, Any]:
    """
    An event read back from JSON, to be rendered from its own fields.

    Twisted's JSON log keeps every field's C{str} in C{log_flattened} and
    renders from it, which drops format specs (C{{delay:.1f}} comes back as
    C{0.26871...}). Where every field the format names came back as itself
    (not as an C{unpersistable} placeholder), the flattened copy goes.

    @param event: An event from L{twisted.logger.eventFromJSON}.

    @return: The event, without C{log_flattened} where the fields suffice.
    """
    if "log_flattened" not in event:
        return event
    for _, name, _, _ in string.Formatter().parse(str(event.get("log_format") or "")):
        if name is None:
            continue
        value = event.get(name.split(".")[0].split("[")[0], {"unpersistable": True})
        if isinstance(value, dict) and value.get("unpersistable"):
            return event
    return {key: value for key, value in event.items() if key != "log_flattened"}
