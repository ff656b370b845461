"""Stopping and restarting replica appliers: who restarts what, and when the record goes.

Scripted connections (tests/unit/fakedb.py) stage what a real server will not do on
request: a STOP that fails after another one succeeded, a START refused at the thaw.
The real-server cases are in tests/integration/test_replica_applier.py.
"""

import json
import logging
import time

import pytest

from quiesce.base import config, log
from quiesce.base.errors import ConnectError, PrivilegeError
from quiesce.holder import process, recovery
from quiesce.records import state
from quiesce.server import db, locking, serverinfo
from tests.unit.fakedb import FakeServer, error

MARIADB = serverinfo.identify("10.11.6-MariaDB-0+deb12u1", "Debian 12")
MARIADB_104 = serverinfo.identify("10.4.34-MariaDB", "mariadb.org binary distribution")
TWO_CHANNELS = [{"Connection_name": name, "Slave_SQL_Running": "Yes", "Slave_IO_Running": "Yes"}
                for name in ("one", "two")]


@pytest.fixture
def settings(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    conf = tmp_path / "quiesce.conf"
    conf.write_text("runtime-dir = %s\nposition-file = %s\nmetrics-file = none\nstop-replica = always\n"
                    "connect-timeout = 1\n" % (runtime, tmp_path / "state" / "position.json"))
    conf.chmod(0o600)
    return config.parse(["--config", str(conf), "freeze"], env={})


def _stop(fake, settings, server=MARIADB):
    recorded, stopped = [], []
    try:
        locking._stop_replica(fake.connect(), server, settings, logging.getLogger("test"), recorded.append,
                              stopped, time.monotonic() + 5)
        return recorded, stopped, None
    except Exception as exc:  # handed to the test
        return recorded, stopped, exc


def test_a_stop_that_fails_after_another_counts_both_as_stopped(settings):
    fake = FakeServer([("SHOW ALL SLAVES STATUS", TWO_CHANNELS), ("STOP SLAVE 'two'", error(1227, "denied"))])
    recorded, stopped, exc = _stop(fake, settings)
    assert recorded == [["one", "two"]]                    # on disk before the first STOP
    assert stopped == ["one", "two"]                       # 'two' may be stopped all the same
    assert isinstance(exc, PrivilegeError) and "REPLICATION SLAVE ADMIN" in str(exc)
    assert not [s for s in fake.statements() if s.startswith("START")], "the caller restarts, not the STOP"


def test_a_stop_that_times_out_says_the_thread_may_be_stopped_and_what_to_do(settings):
    fake = FakeServer([("SHOW ALL SLAVES STATUS", TWO_CHANNELS[:1]),
                       ("STOP SLAVE", error(db.CR_SERVER_LOST, "timed out waiting for the server"))])
    _recorded, stopped, exc = _stop(fake, settings)
    assert stopped == ["one"]
    assert isinstance(exc, ConnectError)
    assert "may be stopped now" in str(exc) and "START SLAVE SQL_THREAD" in str(exc) and "connect-timeout" in str(exc)


def test_mariadb_104_is_told_to_grant_super_to_stop_the_applier(settings):
    fake = FakeServer([("SHOW ALL SLAVES STATUS", TWO_CHANNELS[:1]), ("STOP SLAVE", error(1227, "denied"))])
    _recorded, _stopped, exc = _stop(fake, settings, MARIADB_104)
    assert "GRANT SUPER ON" in str(exc) and "REPLICATION SLAVE ADMIN" not in str(exc)


def _locked(settings, fake):
    return locking.Locked(settings.targets[0], fake.connect(), MARIADB, locking.STRATEGIES[serverinfo.BACKUP_STAGE],
                          {}, ["one", "two"], 1.0, time.monotonic())


def test_release_starts_the_appliers_over_the_lock_session_after_the_unlock(settings):
    fake = FakeServer()
    item = _locked(settings, fake)
    assert locking.release(item, settings, logging.getLogger("test"), ["one", "two"]) is None
    assert item.conn.statements == ["BACKUP STAGE END", "START SLAVE 'one' SQL_THREAD",
                                    "START SLAVE 'two' SQL_THREAD"]
    assert item.restarted == ["one", "two"] and item.restart_problem is None
    assert item.conn.closed and len(fake.connections) == 1


def test_a_start_refused_at_the_release_keeps_the_record_and_is_a_problem(settings, monkeypatch):
    fresh = []
    monkeypatch.setattr(locking, "restart_replica_fresh", lambda *args: fresh.append(args))
    held = process.Holder(settings, log.GatedHandler([]), None, "test")
    fake = FakeServer([("START SLAVE 'two'", error(1201, "staged"))])
    held.locked.append(_locked(settings, fake))
    held._record_stopping(settings.targets[0], ["one", "two"])
    held._release_all()
    left, why = held._restart_replicas()
    assert left == {"default": ["two"]}
    assert "'two'" in why[0] and "staged" in why[0] and "START SLAVE SQL_THREAD by hand" in why[0]
    assert fresh == [], "a START refused over a live session is not retried over a new one"
    assert state.read_json(held.files.replicas)["instances"] == {"default": ["two"]}


def test_targets_that_were_never_locked_are_restarted_over_a_new_connection(settings, monkeypatch):
    fresh = []
    monkeypatch.setattr(locking, "restart_replica_fresh", lambda target, _s, _srv, channels, _log:
                        fresh.append((target.name, list(channels))))
    held = process.Holder(settings, log.GatedHandler([]), None, "test")
    held._record_stopping(settings.targets[0], ["one"])
    assert held._restart_replicas() == ({}, [])
    assert fresh == [("default", ["one"])]
    assert state.read_json(held.files.replicas) is None


def _dead_record(files, instances):
    # A pid that cannot be alive: the record's owner is gone.
    state.write_json_atomic(files.replicas, {"holder_pid": 2 ** 22 + 1, "holder_start_ticks": 0, "instances": instances})


def test_recovery_keeps_what_it_could_not_restart_and_a_new_holder_takes_it_over(settings, monkeypatch):
    files = state.RuntimeFiles(settings.runtime_dir)
    _dead_record(files, {"default": ["one", "two"]})
    monkeypatch.setattr(locking, "restart_replica_fresh", lambda target, *_: "%s: refused" % target.name)
    assert recovery.restart_orphaned_replicas(settings, files) == ["default: refused"]
    assert state.read_json(files.replicas)["instances"] == {"default": ["one", "two"]}
    assert recovery.orphaned_channels(files) == {"default": ["one", "two"]}
    # The next holder records them with its own, and restarts them at its release.
    held = process.Holder(settings, log.GatedHandler([]), None, "test")
    held._record_stopping(settings.targets[0], ["three"])
    assert held.stopping == {"default": ["one", "three", "two"]}
    assert json.loads(open(files.replicas).read())["instances"] == {"default": ["one", "three", "two"]}
    # Once a restart works, the record goes.
    monkeypatch.setattr(locking, "restart_replica_fresh", lambda *_: None)
    assert recovery.restart_orphaned_replicas(settings, files) == []    # its owner (we) is alive: not ours
    assert held._restart_replicas() == ({}, [])
    assert state.read_json(files.replicas) is None
