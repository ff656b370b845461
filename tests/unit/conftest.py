"""Fixtures for unit tests that need files: an empty config file and a scratch root."""

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
