"""The bench's own tests train real models on real data: all are slow, run by .ci/run, not ./test.sh."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "bench/tests" in str(item.fspath):
            item.add_marker(pytest.mark.slow)
