"""
pytest runs examples/test_echo_pytest.py; the trial example is trial's to run
(an asynchronous trial TestCase must not run under pytest-twisted's reactor):
tests/test_examples.py runs it with `python -m twisted.trial`.
"""

collect_ignore = ["test_echo_trial.py"]
