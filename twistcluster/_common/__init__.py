"""
What both sides of the control socketpair share: the AMP protocol and user
messages, endpoint specs and scheduling policies, sockets, ports and transports,
the balance table, event emitters, and loading the user's factory.
"""
