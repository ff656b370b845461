"""durable: which of the server's files are synced under the lock, on real files in tmp_path."""

import os
import re
import time

from quiesce.server import durable, serverinfo

# System variables that MySQL 5.7, 8.0 and 8.4 and MariaDB 10.4 and later all have (their
# manuals' variable lists). MariaDB's aria_log_dir_path or MySQL-only names must not go
# into DURABILITY_STATEMENT: an unknown variable fails the statement, and with it freeze.
EVERY_SERVER_HAS = {"innodb_flush_log_at_trx_commit", "sync_binlog", "log_bin", "datadir", "log_bin_basename",
                    "log_bin_index", "relay_log_index", "innodb_data_home_dir", "innodb_log_group_home_dir",
                    "innodb_undo_directory", "tmpdir"}


def _tree(tmp_path):
    """A datadir with a database directory, a separate binlog directory and an undo directory."""
    datadir = tmp_path / "data"
    (datadir / "shop").mkdir(parents=True)
    (datadir / "undo").mkdir()
    binlogs = tmp_path / "binlogs"
    binlogs.mkdir()
    files = [datadir / "ibdata1", datadir / "ib_logfile0", datadir / "shop" / "t.MYD",
             datadir / "shop" / "t.MYI", datadir / "undo" / "undo001", binlogs / "bin.000001"]
    for path in files:
        path.write_bytes(b"x" * 100)
    info = {"datadir": str(datadir) + "/", "innodb_log_group_home_dir": "./", "innodb_undo_directory": "undo",
            "innodb_data_home_dir": "", "log_bin_basename": str(binlogs / "bin"),
            "log_bin_index": str(binlogs / "bin.index"), "relay_log_basename": str(tmp_path / "gone" / "relay")}
    return info, [str(p) for p in files]


def _drained(found):
    """What a completed drain of tmp_path's filesystem returns, counting changes from now on.

    Not drain() itself: a syncfs() here would write out the whole machine's filesystem.
    The files were made a moment ago, and the real drain counts the STAMP_MARGIN seconds
    before it as changes too, so this one starts now.
    """
    since = time.time()
    time.sleep(0.05)        # file stamps come from a clock that may lag by a tick
    return durable.Drained(found, since, time.time() - time.monotonic(),
                           frozenset({os.stat(found.datadir).st_dev}), 0.0)


def test_server_directories(tmp_path):
    info, _ = _tree(tmp_path)
    assert durable.server_directories(info) == (str(tmp_path / "data"), str(tmp_path / "data" / "undo"),
                                               str(tmp_path / "binlogs"))
    assert durable.server_directories({"datadir": ""}) == ()
    assert durable.server_files({"datadir": str(tmp_path / "elsewhere")}).directories == ()


def test_only_files_changed_since_the_drain_are_synced(tmp_path):
    info, files = _tree(tmp_path)
    found = durable.ServerFiles(str(tmp_path / "data"), durable.server_directories(info), (), ())
    drained = _drained(found)
    assert drained.devices
    with open(files[2], "ab") as handle:        # a MyISAM table written after the drain
        handle.write(b"y")
    synced = durable.sync(drained, 10.0)
    assert synced.complete and not synced.problems, synced
    assert (synced.files, synced.directories, synced.scanned) == (1, 0, len(files))
    # A new file changes its directory, which is synced too.
    (tmp_path / "binlogs" / "bin.000002").write_bytes(b"z")
    synced = durable.sync(drained, 10.0)
    assert (synced.files, synced.directories) == (2, 1), synced


def test_everything_is_synced_without_a_completed_drain(tmp_path):
    info, files = _tree(tmp_path)
    found = durable.ServerFiles(str(tmp_path / "data"), durable.server_directories(info), (), ())
    drained = _drained(found)._replace(since_wall=None)
    synced = durable.sync(drained, 10.0)
    assert synced.files == len(files)
    # A filesystem the drain did not cover counts as not drained either.
    drained = _drained(found)
    assert durable.sync(drained, 10.0).files == 0
    assert durable.sync(drained._replace(devices=frozenset()), 10.0).files == len(files)
    # Nor does a wall clock stepped since the drain.
    drained = drained._replace(clock_offset=drained.clock_offset + 60)
    assert durable.sync(drained, 10.0).files == len(files)


def test_open_files_outside_the_directories_are_synced_when_changed(tmp_path):
    info, files = _tree(tmp_path)
    outside = tmp_path / "tablespaces" / "t.ibd"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    found = durable.ServerFiles(str(tmp_path / "data"), durable.server_directories(info), (str(outside),), ())
    drained = _drained(found)
    assert durable.sync(drained, 10.0).files == 0
    outside.write_bytes(b"new")
    assert durable.sync(drained, 10.0).files == 1


def test_bounded_work_reports_overruns_and_errors():
    problems = []
    began = time.monotonic()
    assert durable._bounded(lambda: time.sleep(2), 0.05, "test-slow", problems) is False
    assert time.monotonic() - began < 1.5
    assert problems == []

    def broken():
        raise ValueError("boom")
    assert durable._bounded(broken, 5.0, "test-broken", problems) is False
    assert problems == ["ValueError: boom"]
    assert durable._bounded(lambda: None, 5.0, "test-fine", problems) is True


def test_durability_statement_names_only_variables_every_server_has():
    names = set(re.findall(r"@@GLOBAL\.(\w+)", serverinfo.DURABILITY_STATEMENT))
    assert names and names <= EVERY_SERVER_HAS, names - EVERY_SERVER_HAS
