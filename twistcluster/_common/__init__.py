"""
What both sides of the control socketpair share: the AMP protocol and user
messages, endpoint specs and scheduling policies, sockets, ports and transports,
the balance table, event emitters, loading the user's factory, and the
statistics a worker answers; and where control sockets live (shared with the
C{twistcluster} command).
"""
