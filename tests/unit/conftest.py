"""Fixtures for unit tests that need files: an empty config file and a scratch root."""

import os

import pytest


@pytest.fixture
def conf(tmp_path):
    """An empty config file (mode 0600): every setting at its default."""
    path = tmp_path / "quiesce.conf"
    path.write_text("")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def root(tmp_path):
    """A scratch tree standing for / (register --root, check's agent detection)."""
    path = tmp_path / "root"
    path.mkdir()
    return str(path)


@pytest.fixture
def connector_errors():
    """mysql.connector.errors; a failure when it is missing, except where a distribution has no
    Connector/Python package to build with (the RPM's %check on EL9 says so)."""
    try:
        from mysql.connector import errors
    except ImportError:
        if os.environ.get("QUIESCE_TESTS_WITHOUT_CONNECTOR") == "1":
            pytest.skip("Connector/Python is not packaged where this build runs (EL9)")
        pytest.fail("mysql-connector-python is not importable: run 'make deps'")
    return errors
