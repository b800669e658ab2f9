import pytest

from tests._cluster import Cluster
from tests._primary import makePrimary, primary  # noqa: F401 (fixtures)


@pytest.fixture
def cluster():
    """
    Start a `twist cluster` master with the given arguments; every one
    started is killed at teardown, with its workers, whatever happened.
    """
    started: list[Cluster] = []

    def start(*args: str, **kwargs) -> Cluster:
        c = Cluster(*args, **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.close()
        # Shown by pytest only when the test failed.
        print(f"--- twist cluster {' '.join(c.args)}\n{c.output}")
