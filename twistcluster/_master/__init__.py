"""
The master's side: the service and its signals, the worker processes as the
master sees them and their lifecycle, listening handles and hand-off scheduling,
the heartbeat monitor, and the respawn policy.
"""
