"""Which filesystems run --freeze-fs freezes (the freezing itself: tests/integration/test_run_snapshots.py)."""

import pytest

from quiesce.agents import fsfreeze
from quiesce.base.errors import ConfigError


def test_each_filesystem_once_by_its_mount_point():
    assert fsfreeze.mount_point("/proc/self/fd") == "/proc"
    assert fsfreeze.mount_points(["/proc/self", "/proc/1", "/sys/kernel"]) == ["/proc", "/sys"]


def test_the_root_filesystem_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="root filesystem.*fix: leave out --freeze-fs"):
        fsfreeze.mount_points(["/proc/self", "/"])


def test_nothing_frozen_thaws_nothing():
    assert fsfreeze.Frozen().thaw_all(1.0) == []
