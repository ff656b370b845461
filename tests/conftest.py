"""Shared by every test layer (unit, integration, packaging).

With QUIESCE_STRICT_SKIPS=1 (set by `make test`) a skip not allowed by tests/skips.py fails
the run, and so does a missing pytest-timeout.

The tests import the package from the work tree and mysql-connector-python from .deps/
(`make deps` puts it there), whether or not PYTHONPATH was set by the caller.
"""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPS = os.path.join(REPO, ".deps")

for path in (DEPS, REPO):
    if os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: runs real MariaDB servers")
    config.addinivalue_line("markers", "packaging: builds and installs real packages (slow)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    from tests import skips
    if skips.strict() and not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError("pytest-timeout is not installed (python3-pytest-timeout; run 'make deps'): "
                                "without it a hung integration test blocks the run forever")
    skips.register(config)


def pytest_collection_modifyitems(config, items):
    packaging = os.path.join(REPO, "tests", "packaging") + os.sep
    for item in items:
        if str(item.fspath).startswith(packaging):
            item.add_marker("packaging")
