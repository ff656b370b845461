"""Lock methods on a real MariaDB: FTWRL and BACKUP STAGE give equally consistent
snapshots, and differ only in what they let run while frozen.

The snapshot test is the engine's: writers commit to InnoDB, MyISAM and Aria tables while
quiesce freezes; the datadir is copied at one instant (server paused, see
MariaDB.copy_datadir) while frozen; the copy boots with crash recovery and must hold
exactly the commits its binlog position says, every commit acknowledged before freeze
returned, whole InnoDB transactions, and cleanly closed MyISAM/Aria tables.
"""

import os
import threading
import time

import pytest

from .load import table_rows
from .prodhelpers import (BACKUP_LOCK_WAIT, Background, ProbeWriters, check_tables, gtid_seq, lock_waiters,
                          no_lock_held, unclean, wait_state)

ENGINES = ("InnoDB", "MyISAM", "Aria")
# Grace for a commit acknowledged by the server just before the lock, but noted by the
# writer thread (GIL, scheduling) just after freeze returned.
ACK_GRACE = 0.25


def _freeze(quiesce_env):
    began = time.monotonic()
    result = quiesce_env.run("freeze")
    assert result.rc == 0, result
    return began, time.monotonic()


@pytest.mark.parametrize("method", ["ftwrl", "backup-stage"])
def test_snapshot_taken_while_frozen_is_consistent(method, mariadb, quiesce_env, tmp_path, request):
    quiesce_env.write_config(lock_method=method)
    load = ProbeWriters(mariadb, engines=ENGINES, threads_per_engine=2, max_seconds=90)
    load.create_tables()
    base_seq = gtid_seq(mariadb.value("SELECT @@GLOBAL.gtid_binlog_pos"))
    request.addfinalizer(lambda: load.stop(timeout=15))
    load.start()
    load.wait_for_progress(20)

    _began, frozen_at = _freeze(quiesce_env)
    position = quiesce_env.position()
    status = quiesce_env.status()
    dest = str(tmp_path / "copy")
    copy_began = time.monotonic()
    mariadb.copy_datadir(dest)
    thaw_began = time.monotonic()
    result = quiesce_env.run("thaw")
    assert result.rc == 0, result
    load.wait_for_progress(5)
    load.stop()
    assert not load.failures, load.failures[:3]

    # Which method, said by the position file and by status.
    assert position["lock"] == method
    assert status["frozen"] is True
    assert [i["lock"] for i in status["instances"]] == [method]

    # Nothing committed while frozen: every writer had a commit waiting for the whole window.
    late = load.commits_acked_between(frozen_at + ACK_GRACE, thaw_began)
    assert late == [], "commits went through while frozen (%s): %s" % (method, late[:5])
    assert load.blocked_through(frozen_at + ACK_GRACE, copy_began) == set(load.tables)

    # The binlog in the copy ends exactly at the recorded position.
    binlog = os.path.join(dest, position["binlog_file"])
    assert os.path.getsize(binlog) == position["binlog_position"]

    copy = mariadb.boot_copy(dest)
    request.addfinalizer(copy.cleanup)
    assert copy.value("SELECT @@GLOBAL.gtid_binlog_pos") == position["gtid"]
    rows = table_rows(copy, load.database, load.tables)
    # InnoDB transactions are whole.
    assert set(rows["t_innodb"].values()) == {2}, "half an InnoDB transaction in the snapshot"
    # Tables and binlog agree exactly: one GTID per writer commit since the baseline.
    in_copy = sum(len(r) for r in rows.values())
    assert in_copy == gtid_seq(position["gtid"]) - base_seq, (in_copy, position["gtid"], base_seq)
    # Every commit acknowledged before freeze returned is there; nothing never acknowledged is.
    before = load.acked_keys(before=frozen_at)
    acked = load.acked_keys()
    for table in load.tables:
        missing = before[table] - set(rows[table])
        assert not missing, "%s: %d commits acknowledged before freeze are missing" % (table, len(missing))
        assert set(rows[table]) <= acked[table], table
    # MyISAM and Aria were flushed and closed by the lock: no repair needed.
    checked = check_tables(copy, ["load.t_myisam", "load.t_aria", "quiesce_probe.probe_myisam"])
    assert unclean(checked) == {}, "%s left tables unclean: %s" % (method, unclean(checked))


@pytest.mark.parametrize("method, expected", [("auto", "backup-stage"), ("ftwrl", "ftwrl")])
def test_what_runs_while_frozen(method, expected, mariadb, quiesce_env, request):
    """BACKUP STAGE: reads and uncommitted DML run, commits wait. FTWRL: reads run, writes wait."""
    mariadb.sql("CREATE TABLE quiesce_probe.acct (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    mariadb.sql("INSERT INTO quiesce_probe.acct VALUES (1, 0), (2, 0)")
    mariadb.sql("INSERT INTO quiesce_probe.probe_myisam (at) VALUES (NOW(6))")
    quiesce_env.write_config(lock_method=method)
    _freeze(quiesce_env)
    assert quiesce_env.position()["lock"] == expected
    background = []

    def bg(*statements):
        job = Background(mariadb, statements, database="quiesce_probe")
        background.append(job)
        request.addfinalizer(job.close)
        return job

    try:
        # Reads run under either lock, on InnoDB and MyISAM alike.
        reads = bg("SELECT COUNT(*) FROM acct", "SELECT COUNT(*) FROM probe_myisam",
                   "SELECT SUM(v) FROM acct LOCK IN SHARE MODE")
        assert reads.wait(2.0) and reads.error is None, reads.error

        # An InnoDB transaction: its DML runs under BACKUP STAGE, waits under FTWRL.
        trx = bg("BEGIN", "SELECT v FROM acct WHERE id = 1 FOR UPDATE", "UPDATE acct SET v = v + 1 WHERE id = 1",
                 "INSERT INTO acct VALUES (3, 3)", "SELECT v FROM acct WHERE id = 1")
        autocommit = bg("INSERT INTO acct VALUES (10, 10)")
        myisam = bg("INSERT INTO probe_myisam (at) VALUES (NOW(6))")
        wait_state(mariadb, autocommit.conn_id, BACKUP_LOCK_WAIT, timeout=5)
        wait_state(mariadb, myisam.conn_id, BACKUP_LOCK_WAIT, timeout=5)
        if expected == "backup-stage":
            assert trx.wait(2.0) and trx.error is None, trx.error
            # The uncommitted change is visible to its own session.
            assert trx.results[-1] == ((1,),)
            # COMMIT on the same connection: it must wait for the lock.
            commit = _commit_in_background(trx, request)
            wait_state(mariadb, trx.conn_id, BACKUP_LOCK_WAIT, timeout=5)
            assert not commit.is_set()
        else:
            wait_state(mariadb, trx.conn_id, BACKUP_LOCK_WAIT, timeout=5)
            assert not trx.done.is_set()
        assert not autocommit.done.is_set() and not myisam.done.is_set()
        waiting = {int(r["ID"]) for r in lock_waiters(mariadb)}
        assert {autocommit.conn_id, myisam.conn_id, trx.conn_id} <= waiting
    finally:
        thawed = quiesce_env.run("thaw")
    assert thawed.rc == 0, thawed
    # All of it goes through once thawed.
    for job in (autocommit, myisam):
        assert job.wait(5.0) and job.error is None, (job.statements, job.error)
    if expected == "backup-stage":
        assert commit.wait(5.0) and trx.error is None
    else:
        assert trx.wait(5.0) and trx.error is None, trx.error
        with trx.conn.cursor() as cur:
            cur.execute("COMMIT")
    assert mariadb.value("SELECT v FROM quiesce_probe.acct WHERE id = 1") == 1
    assert mariadb.value("SELECT COUNT(*) FROM quiesce_probe.acct") == 4
    assert no_lock_held(mariadb)


def _commit_in_background(job, request):
    """COMMIT on a Background job's connection (its statements are done) in a new thread."""
    done = threading.Event()

    def run():
        try:
            with job.conn.cursor() as cur:
                cur.execute("COMMIT")
        except BaseException as exc:
            job.error = exc
        finally:
            done.set()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return done
