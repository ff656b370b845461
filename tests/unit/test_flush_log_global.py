"""innodb_flush_log_at_trx_commit, raised to 1 for the flush under the lock, is never left
there without a trace: the change is on disk before it is made, the holder puts it back,
and a failure to do so is named (and recovery puts it back later)."""

import json
import logging
import os

import pytest

from quiesce.base import paths
from quiesce.holder import recovery
from quiesce.records import state
from quiesce.server import locking, serverinfo
from tests.unit.fakedb import FakeServer, error

MARIADB = serverinfo.identify("10.11.6-MariaDB")
GLOBAL = "innodb_flush_log_at_trx_commit"


def _record(runtime):
    path = os.path.join(runtime, paths.GLOBALS_NAME)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture
def runtime(tmp_path):
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return str(path)


def _flush(server, runtime, caplog, mode=2):
    conn = server.connect()
    warnings = []
    with caplog.at_level(logging.WARNING, logger="t"):
        try:
            locking._flush_innodb_log(conn, MARIADB, {GLOBAL: mode}, warnings, logging.getLogger("t"),
                                      "main", runtime)
        except Exception as exc:
            return conn, warnings, exc
    return conn, warnings, None


def test_flush_and_restore_both_failing_names_the_global_and_keeps_the_first_error(runtime, caplog):
    server = FakeServer([
        (r"FLUSH", error(1290, "flush refused")),
        (r"SET GLOBAL innodb_flush_log_at_trx_commit = 2", error(2013, "Lost connection to server")),
    ])
    conn, _warnings, raised = _flush(server, runtime, caplog)
    assert conn.statements == ["SET GLOBAL innodb_flush_log_at_trx_commit = 1",
                               "FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS",
                               "SET GLOBAL innodb_flush_log_at_trx_commit = 2"]
    # The flush's error is what the freeze reports, not the restore's.
    assert raised is not None and "flush refused" in str(raised), raised
    text = " ".join(r.getMessage() for r in caplog.records)
    assert GLOBAL in text and "left at 1" in text and "= 2" in text, text
    # The change stays on record for recovery, with this process as its owner.
    record = _record(runtime)
    assert record["instances"] == {"main": {GLOBAL: 2}} and record["holder_pid"] == os.getpid()


def test_restore_failing_after_a_good_flush_warns_and_keeps_the_record(runtime, caplog):
    server = FakeServer([(r"SET GLOBAL innodb_flush_log_at_trx_commit = 2", error(1227, "denied"))])
    _conn, warnings, raised = _flush(server, runtime, caplog)
    assert raised is None
    assert any(GLOBAL in w for w in warnings), warnings
    assert _record(runtime)["instances"] == {"main": {GLOBAL: 2}}


def test_the_change_is_recorded_before_it_is_made_and_forgotten_once_undone(runtime, caplog):
    seen = []
    server = FakeServer([(r"SET GLOBAL innodb_flush_log_at_trx_commit = 1", lambda sql: seen.append(_record(runtime)))])
    _conn, warnings, raised = _flush(server, runtime, caplog, mode=0)
    assert raised is None and not warnings
    assert seen and seen[0]["instances"] == {"main": {GLOBAL: 0}}
    assert _record(runtime) is None


def test_recovery_restores_what_a_dead_holder_left(runtime, monkeypatch, caplog):
    files = state.RuntimeFiles(runtime)
    dead = {"holder_pid": 2 ** 22 + 12345, "holder_start_ticks": 1}
    state.write_json_atomic(os.path.join(runtime, paths.GLOBALS_NAME),
                            dict(dead, instances={"main": {GLOBAL: 2}, "gone": {GLOBAL: 0}}))
    server = FakeServer()
    targets = [type("T", (), {"name": "main"})()]
    settings = type("S", (), {"targets": targets})()
    monkeypatch.setattr(locking, "connect", lambda target, _settings: server.connect())
    with caplog.at_level(logging.WARNING, logger="t"):
        recovery.restore_orphaned_globals(settings, files, logging.getLogger("t"))
    assert server.statements() == ["SET GLOBAL innodb_flush_log_at_trx_commit = 2"]
    said = [r.getMessage() for r in caplog.records]
    assert any(GLOBAL in line and "back to 2" in line for line in said), said
    # An instance no longer configured cannot be restored here: it stays on record.
    assert _record(runtime)["instances"] == {"gone": {GLOBAL: 0}}


def test_recovery_leaves_a_live_holders_change_alone(runtime, monkeypatch):
    files = state.RuntimeFiles(runtime)
    state.write_json_atomic(os.path.join(runtime, paths.GLOBALS_NAME),
                            dict(state.owner_record(), instances={"main": {GLOBAL: 2}}))
    server = FakeServer()
    settings = type("S", (), {"targets": [type("T", (), {"name": "main"})()]})()
    monkeypatch.setattr(locking, "connect", lambda target, _settings: server.connect())
    recovery.restore_orphaned_globals(settings, files, logging.getLogger("t"))
    assert server.statements() == [] and _record(runtime) is not None
