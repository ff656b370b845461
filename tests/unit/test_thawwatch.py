"""The holder's filesystem-thaw probes: who gets one, and what the record says about them."""

import logging
import types

import pytest

from quiesce.holder import fsprobe, thawwatch


def _target(tmp_path):
    return types.SimpleNamespace(name="main", is_local=True, position_file=str(tmp_path / "state" / "position.json"))


class StubProbe:
    """Stands in for FsThawProbe: what watch() and describe() read of one."""

    made = []

    def __init__(self, directory, on_thaw, armed=True):
        self.path = directory + "/.quiesce-fsprobe-stub"
        self.armed = armed
        self.fired = False
        self.frozen_at = self.thawed_at = None
        self.inspection = None
        self.error = None
        StubProbe.made.append(self)

    def start(self):
        self.inspection = "none"

    def arm(self):
        self.armed = True

    def stop(self):
        pass


@pytest.fixture
def stub_probe(monkeypatch):
    StubProbe.made = []
    monkeypatch.setattr(fsprobe, "FsThawProbe", StubProbe)
    return StubProbe


@pytest.mark.parametrize("caller, probed", [
    ("vmware-tools", True), ("qemu-guest-agent", True), ("azure-waagent", True),
    ("vmware", True), ("qemu-ga", True), ("azure", True),
    ("gce", False), ("google-guest-agent", False), ("aws-ssm-agent", False), ("veeam", False),
    ("nutanix-guest-tools", False), ("unknown", False), ("sshd", False),
])
def test_only_callers_that_freeze_get_a_probe(tmp_path, stub_probe, caller, probed):
    watch = thawwatch.ThawWatch(True, lambda: None, logging.getLogger("t"), caller)
    watch.watch(_target(tmp_path), str(tmp_path))
    assert bool(stub_probe.made) is probed and watch.enabled is probed


def test_the_probe_counts_no_freeze_until_armed(tmp_path, stub_probe):
    watch = thawwatch.ThawWatch(True, lambda: None, logging.getLogger("t"), "qemu-guest-agent")
    watch.watch(_target(tmp_path), str(tmp_path))
    (probe,) = stub_probe.made
    assert probe.armed is False
    watch.arm()
    assert probe.armed is True


def test_describe_and_the_log_say_when_the_probe_cannot_work(tmp_path, stub_probe, caplog):
    watch = thawwatch.ThawWatch(True, lambda: None, logging.getLogger("t"), "vmware-tools")
    with caplog.at_level(logging.INFO, logger="t"):
        watch.watch(_target(tmp_path), str(tmp_path))
    (probe,) = stub_probe.made
    probe.error = "write: [Errno 5] Input/output error"
    (described,) = watch.describe()
    assert described["inspection"] == "none"
    assert described["error"] == "write: [Errno 5] Input/output error"
    # With inspection "none" the probe can never see a freeze: the admin is told so.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("never" in w and "release-on-fs-thaw" in w for w in warnings), warnings
    # A probe that failed during the hold says so when it is stopped.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="t"):
        watch.stop()
    assert any("stopped early" in r.getMessage() and "Errno 5" in r.getMessage() for r in caplog.records)
