"""
A FACTORY whose module imports pyOpenSSL itself: the master loads it
before it would leave pyOpenSSL out (tests.test_endpoint_kinds).
"""

from OpenSSL import SSL  # noqa: F401 (the import is the point)

from tests.clusterapps import WhoAmIFactory  # noqa: F401
