"""The verdict on whether a snapshot needs the commit block (quiesce/server/crashsafe.py):
pure logic over the facts read from the server. The facts themselves are read from real
servers in tests/integration/test_crash_safe_check.py."""

import dataclasses

import pytest

from quiesce.server import crashsafe, serverinfo

MARIADB_10_11 = serverinfo.identify("10.11.19-MariaDB-log")
MARIADB_10_5 = serverinfo.identify("10.5.23-MariaDB")
MYSQL_9 = serverinfo.identify("9.7.4", "MySQL Community Server - GPL")
MYSQL_5_7 = serverinfo.identify("5.7.44-log", "MySQL Community Server (GPL)")

SAFE = crashsafe.Facts(server=MARIADB_10_11, galera=False, log_bin=True, flush=1, sync_binlog=1,
                       redo_enabled=None, table_logging=False, unsafe_tables=())


def _against(freezes=False, **changes):
    return crashsafe.reasons_against(dataclasses.replace(SAFE, **changes), freezes_filesystems=freezes)


@pytest.mark.parametrize("server", [MARIADB_10_11, MYSQL_9])
def test_an_innodb_only_durable_server_needs_no_commit_block(server):
    assert _against(server=server) == []
    assert _against(server=server, freezes=True) == []


@pytest.mark.parametrize("changes, words", [
    ({"server": MARIADB_10_5}, "older than MariaDB 10.6"),
    ({"server": MYSQL_5_7}, "older than MariaDB 10.6 or MySQL 8.0"),
    ({"galera": True}, "Galera"),
    ({"server": MYSQL_9, "redo_enabled": False}, "redo logging is disabled"),
    ({"unsafe_tables": ("app.t (MyISAM)",)}, "app.t (MyISAM)"),
    ({"table_logging": True}, "log_output = TABLE"),
    ({"sees_every_table": False}, "GRANT SHOW VIEW ON *.*"),
    ({"flush": 0}, "innodb_flush_log_at_trx_commit = 0"),
    ({"scan_problem": "the tables' engines could not be listed within 10 s (timeout)"}, "could not be listed"),
])
def test_each_reason_alone_requires_the_commit_block_for_every_agent(changes, words):
    for freezes in (False, True):
        reasons = _against(freezes=freezes, **changes)
        assert len(reasons) == 1 and words in reasons[0], (freezes, reasons)


def test_a_frozen_filesystem_tolerates_flush_2_and_an_unsynced_binlog():
    assert _against(freezes=True, flush=2, sync_binlog=0) == []
    assert [r.split(" (")[0] for r in _against(flush=2, sync_binlog=0)] == [
        "innodb_flush_log_at_trx_commit = 2", "sync_binlog = 0"]


def test_without_a_binary_log_sync_binlog_does_not_matter():
    assert _against(log_bin=False, sync_binlog=0) == []


def test_more_unsafe_tables_than_named_are_elided():
    tables = tuple("app.t%d (MyISAM)" % i for i in range(crashsafe.NAMED + 1))
    (reason,) = _against(unsafe_tables=tables)
    assert reason.endswith("app.t%d (MyISAM), ..." % (crashsafe.NAMED - 1)), reason


def test_the_saving_is_the_median_hold_of_commit_blocking_snapshots():
    entries = [{"ok": True, "held_ms": 100.0, "lock": ["backup-stage"]},
               {"ok": True, "held_ms": 300.0, "lock": ["ftwrl"]},
               {"ok": False, "held_ms": 9000.0, "lock": ["ftwrl"]},     # failed: not a snapshot
               {"ok": True, "held_ms": None, "lock": ["ftwrl"]},
               {"ok": True, "held_ms": 50.0, "lock": []}]                 # no server was running
    assert crashsafe.saved_ms(entries) == (200.0, 2)
    assert crashsafe.saved_ms([]) is None


def test_the_engine_scan_is_bounded_on_both_flavours():
    assert crashsafe._bounded(MARIADB_10_11, "SELECT 1").startswith("SET STATEMENT max_statement_time = 10 FOR ")
    assert crashsafe._bounded(MYSQL_9, "SELECT 1") == "SELECT /*+ MAX_EXECUTION_TIME(10000) */ 1"
