"""
The C{twistcluster} command: an operator's client of the masters' control
sockets (status, top, reload, scale, stop, ...).  It imports nothing of the
master or of Twisted: a plain blocking socket, and C{rich} for the tables.
"""
