"""
The benchmark harness of issue 6: twistcluster, a single-process Twisted
server and Node's C{cluster}, side by side, under the same load.

C{python -m benchmarks --help} (or C{make bench}) runs it.  The servers are
L{benchmarks.responder} (Twisted) and C{benchmarks/responder.js} (Node): the
same minimal HTTP/1.1 responder written once in each language, so that the
comparison measures the cluster, not an HTTP stack.
"""
