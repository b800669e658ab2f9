"""
Node's C{cluster} module in Python, both faces: the primary's (C{fork()},
C{workers}, settings) and a worker's (C{cluster.worker}).
"""
