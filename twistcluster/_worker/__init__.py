"""
The worker's side: the worker process's entry point, its runtime, listens
routed through the master, and the connections it serves.
"""
