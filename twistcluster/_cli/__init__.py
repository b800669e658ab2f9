"""
The command line: C{twist cluster} and clustered C{twist} plugins.
"""
