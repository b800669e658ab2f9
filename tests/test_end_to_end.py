"""
The issue's two headline uses, end to end with a real HTTP client: Node's
"hello world" cluster as a plain Python script (examples/app.py), and any
twist plugin clustered (`twist cluster -- web ...`).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import sys

from tests._cluster import PROJECT, waitUntil

EXAMPLES = PROJECT / "examples"

RPY = """
import os
from twisted.web.resource import Resource

class WhoAmI(Resource):
    isLeaf = True

    def render_GET(self, request):
        return ("worker %s pid %d" % (os.environ["TWISTCLUSTER_WORKER_ID"], os.getpid())).encode()

resource = WhoAmI()
"""


def get(address: tuple[str, int], path: str = "/") -> tuple[int, str]:
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_seed_script(cluster, tmp_path):
    """
    `python app.py`: the primary forks workers of the same script, each
    listens on tcp:PORT through the primary (port 0: the first listen of
    every worker shares one kernel-chosen port), requests go to every worker
    in turn, the primary's 'exit' handler sees a killed worker's pid, and
    SIGTERM stops everything with status 0.
    """
    app = cluster(command=[sys.executable, str(EXAMPLES / "app.py"), "0", "2"], cwd=tmp_path)
    listening = app.waitFor(r"worker (\d+) listening on port (\d+)", 2)
    pids = {int(m.group(1)) for m in listening}
    (port,) = {int(m.group(2)) for m in listening}
    address = ("127.0.0.1", port)
    bodies = [get(address) for _ in range(4)]
    assert all(status == 200 for status, _ in bodies)
    served = {int(re.search(r"\(pid (\d+)\)", body).group(1)) for _, body in bodies}
    assert served == pids
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    app.waitFor(rf"worker {victim} died")
    # No respawn (Node's model: 'exit' is where an application forks again);
    # the other worker serves alone.
    assert all(f"(pid {max(pids)})" in get(address)[1] for _ in range(2))
    app.signal(signal.SIGTERM)
    assert app.wait() == 0
    assert app.matches(rf"worker {max(pids)} died")
    waitUntil(lambda: not app.leftovers(), 10, "no process left")


def test_clustered_twist_web(cluster, tmp_path):
    """
    `twist cluster -- web --listen ... --path DIR` runs twist's own web
    plugin in every worker, unchanged: the master binds the plugin's
    endpoint, static files and .rpy resources are served by every worker in
    turn, and TERM stops it all with status 0.
    """
    (tmp_path / "index.html").write_text("static hello\n")
    (tmp_path / "whoami.rpy").write_text(RPY)
    web = cluster(
        "--workers", "2", "--", "web", "--listen", "tcp:0:interface=127.0.0.1", "--path", str(tmp_path)
    )
    pids = web.waitReady(2)
    address = web.address("tcp:0:interface=127.0.0.1")
    assert get(address, "/index.html") == (200, "static hello\n")
    answers = {get(address, "/whoami.rpy")[1] for _ in range(4)}
    assert answers == {f"worker {w} pid {p}" for w, p in pids.items()}
    web.signal(signal.SIGTERM)
    assert web.wait() == 0
    assert web.leftovers() == []
