"""What a snapshot taken while frozen holds: a point-in-time copy of the datadir made
between freeze and thaw boots (with crash recovery) and holds exactly the rows committed
before the freeze, MyISAM and Aria tables check clean, and the recorded binlog position is
the end of the binlog in the copy. A control test shows the same checks catch a copy made
without the lock. Every server kind, with every lock it offers (Aria: MariaDB only)."""

import os
import time

import pytest

from . import servers
from .checks import assert_clean, check_position
from .load import table_rows
from .runner import wait_for

GRACE = 0.1
pytestmark = pytest.mark.flavours()


def _boot(request, server, dest):
    copy = server.boot_copy(str(dest))
    request.addfinalizer(copy.cleanup)
    return copy


def _check_tables_clean(copy, database, tables):
    problems = []
    for table in tables:
        for row in copy.query("CHECK TABLE `%s`.`%s` EXTENDED" % (database, table)):
            _name, _op, msg_type, msg_text = row
            if (msg_type.lower(), msg_text) != ("status", "OK"):
                problems.append((table, msg_type, msg_text))
    assert not problems, "CHECK TABLE on the copy: %r" % problems


def _binlog_index(datadir):
    with open(os.path.join(datadir, "binlog.index")) as handle:
        return [os.path.basename(line.strip()) for line in handle if line.strip()]


@pytest.mark.parametrize("server_flavour, lock", servers.with_locks(), indirect=["server_flavour"])
def test_copy_made_while_frozen_is_consistent(request, mariadb, quiesce_env, writers, driver, lock, tmp_path):
    env = quiesce_env
    env.write_config(lock_method=lock)
    load = writers(engines=mariadb.ENGINES)
    load.wait_for_progress(30)

    t_freeze = time.monotonic()
    result = env.run("freeze")
    t_frozen = time.monotonic()
    assert result.rc == 0, result
    live = mariadb.binlog_status()
    frozen_rows = table_rows(mariadb, load.database, load.tables)
    # Writers queue up behind the lock before the copy is made.
    wait_for(lambda: load.blocked_through(t_frozen + GRACE, time.monotonic()) >= set(load.tables),
             5, what="every writer to be blocked")
    dest = tmp_path / "snapshot"
    mariadb.copy_datadir(str(dest))
    assert table_rows(mariadb, load.database, load.tables) == frozen_rows

    assert env.run("thaw").rc == 0
    load.wait_for_progress(10)
    load.stop()
    assert not load.failures, load.failures[:3]

    position = env.position()
    check_position(position, mariadb, lock, live)
    binlog = dest / position["binlog_file"]
    # The recorded coordinates are the end of the binlog the snapshot holds.
    assert _binlog_index(str(dest))[-1] == position["binlog_file"]
    assert binlog.stat().st_size == position["binlog_position"], (
        "binlog %s in the copy is %d bytes; recorded position %d"
        % (binlog.name, binlog.stat().st_size, position["binlog_position"]))

    copy = _boot(request, mariadb, dest)
    log = copy.error_log_text()
    assert "ready for connections" in log
    copy_rows = table_rows(copy, load.database, load.tables)
    for table in load.tables:
        assert copy_rows[table] == frozen_rows[table], (
            "%s: copy has %d rows, the server had %d when frozen; only in copy: %s; only in server: %s"
            % (table, len(copy_rows[table]), len(frozen_rows[table]),
               sorted(set(copy_rows[table]) - set(frozen_rows[table]))[:5],
               sorted(set(frozen_rows[table]) - set(copy_rows[table]))[:5]))
    assert set(copy_rows["t_innodb"].values()) == {2}, "a transaction was cut in half"
    for table, keys in load.acked_keys(before=t_freeze).items():
        assert keys <= set(copy_rows[table]), "%s: a commit acknowledged before freeze is missing" % table

    plain = [t for t in load.tables if t != "t_innodb"]
    _check_tables_clean(copy, load.database, plain)
    for line in log.splitlines():
        assert not any(t in line for t in plain), "the copy's error log complains: %s" % line

    events = copy.query("SHOW BINLOG EVENTS IN %s", (position["binlog_file"],))
    assert int(events[-1][4]) == position["binlog_position"], events[-3:]
    assert copy.gtid() == position["gtid"]
    assert_clean(env, mariadb)


def test_checks_catch_a_copy_made_without_the_lock(request, mariadb, writers, tmp_path):
    """Control: the same comparisons fail for a copy of the unlocked server, so the test
    above cannot pass by accident."""
    load = writers(engines=mariadb.ENGINES)
    load.wait_for_progress(30)
    live = mariadb.binlog_status()
    rows = table_rows(mariadb, load.database, load.tables)
    load.wait_for_progress(5)
    dest = tmp_path / "unlocked"
    mariadb.copy_datadir(str(dest))
    load.stop()
    assert (dest / live["file"]).stat().st_size != live["position"]
    copy = _boot(request, mariadb, dest)
    # MySQL refuses to read a MyISAM table copied mid-write at all (marked as crashed).
    comparable = load.tables if mariadb.flavour == "mariadb" else ["t_innodb"]
    copy_rows = table_rows(copy, load.database, comparable)
    assert all(copy_rows[t] != rows[t] for t in comparable)
    # An unflushed MyISAM table is caught by CHECK TABLE (automatic repair is off in copies).
    with pytest.raises(AssertionError, match="t_myisam"):
        _check_tables_clean(copy, load.database, ["t_myisam"])


@pytest.mark.parametrize("parallel_threads", [0, 4])
def test_freeze_on_a_replica_records_source_coordinates(mariadb, replica_of, quiesce_env, writers,
                                                         parallel_threads):
    """On a replica the position file carries the source coordinates; with a parallel
    applier (stop-replica=auto) the SQL thread is stopped while frozen and started again."""
    primary = mariadb
    replica = replica_of(primary, parallel_threads=parallel_threads)
    env = quiesce_env
    env.write_config(socket=replica.socket)
    load = writers(server=primary, engines=("InnoDB", "MyISAM"))
    load.wait_for_progress(20)
    replica.wait_caught_up(primary)
    assert env.run("freeze").rc == 0
    position = env.position()
    assert position["datadir"].rstrip("/") == replica.datadir.rstrip("/")
    assert isinstance(position["replica"], list) and len(position["replica"]) == 1, position["replica"]
    channel = position["replica"][0]
    status = replica.replica_status()
    assert channel["gtid"] == replica.value(replica.REPLICA_GTID)
    assert channel["source_port"] == primary.port
    assert position["replica_stopped"] is (parallel_threads > 0)
    if parallel_threads:
        assert status["Slave_SQL_Running"] == "No"
    # The primary is not locked: its writers go on.
    load.wait_for_progress(5)
    assert replica.try_write(0.3) is None
    assert env.run("thaw").rc == 0
    load.stop()
    replica.wait_replica_running(10)
    replica.wait_caught_up(primary)
    for table in load.tables:
        assert (replica.value("SELECT COUNT(*) FROM load.%s" % table)
                == primary.value("SELECT COUNT(*) FROM load.%s" % table))
    assert_clean(env, replica)
