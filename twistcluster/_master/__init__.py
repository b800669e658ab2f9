"""
The master's side: the service and its signals, the worker processes as the
master sees them and their lifecycle, listening handles, hand-off scheduling and
picking (which worker gets the next connection),
the heartbeat monitor, and the respawn policy.
"""
