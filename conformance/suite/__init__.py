"""The conformance tests.  Run them with ``pytest --pyargs conformance.suite --lstm-impl=IMPL``."""
